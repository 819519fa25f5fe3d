"""Pure translations from a VMSpec to PVE's VM configuration (property strings, 0/1 booleans).

    create_params(spec, vmid=101, disk_storage="local-lvm")
    # {"vmid": 101, "name": "web-server", "ostype": "l26", "cores": 2, "memory": "2048", "cpu": "kvm64",
    #  "agent": "enabled=1", "vga": "std", "serial0": "socket", "boot": "order=virtio0;ide2",
    #  "virtio0": "local-lvm:0,import-from=local:import/web-server-image-….qcow2,cache=none",
    #  "ide2": "local:iso/web-server-seed-….iso,media=cdrom",
    #  "net0": "virtio=BC:24:11:12:34:56,bridge=vmbr0,firewall=0", "tags": "imgbuild", ...}
"""

from __future__ import annotations

import base64
import hashlib
import lzma
import math
import re
from typing import Any

from builder.errors import InvalidInput
from builder.targets.base import DiskSpec, NicSpec, Staged, VMSpec

TAG = "imgbuild"
CDROM_KEYS = ("ide2", "ide3", "ide0", "ide1")  # CD-ROM slot n -> drive key
DNS_LABEL = re.compile(r"^(?=.{1,63}$)[a-zA-Z0-9]([a-zA-Z0-9-]*[a-zA-Z0-9])?$")
GIB = 1024**3


def cdrom_key(slot: int) -> str:
    if not 0 <= slot < len(CDROM_KEYS):
        raise InvalidInput(f"CD-ROM slot {slot} is not available (slots 0-{len(CDROM_KEYS) - 1})")
    return CDROM_KEYS[slot]


def disk_keys(disks: tuple[DiskSpec, ...]) -> list[str]:
    """Drive keys in bus order: virtio0, virtio1, scsi0 ... (ide0/ide1 only: ide2/ide3 hold CD-ROMs)."""
    counters: dict[str, int] = {}
    keys = []
    for disk in disks:
        n = counters.get(disk.bus, 0)
        if disk.bus == "ide" and n > 1:
            raise InvalidInput("at most two IDE disks (ide2 and ide3 hold the CD-ROMs)")
        keys.append(f"{disk.bus}{n}")
        counters[disk.bus] = n + 1
    return keys


def size_gib(size_bytes: int) -> int:
    """A new disk's size for PVE's ``STORAGE:SIZE_IN_GiB`` syntax (rounded up)."""
    return max(1, math.ceil(size_bytes / GIB))


def bool01(value: bool) -> str:
    return "1" if value else "0"


def check_name(name: str) -> str:
    """PVE VM names are DNS names; imgbuild's names are one label."""
    if not DNS_LABEL.match(name):
        raise InvalidInput(f"VM name {name!r} is not valid on Proxmox VE: letters, digits and '-' "
                           "(not first or last), at most 63")
    return name


def net_value(nic: NicSpec) -> str:
    parts = [f"{nic.model}={nic.mac.upper()}", f"bridge={nic.bridge}", f"firewall={bool01(nic.firewall)}"]
    if nic.vlan is not None:
        parts.append(f"tag={nic.vlan}")
    return ",".join(parts)


def disk_value(disk: DiskSpec, storage: str) -> str:
    if disk.source is not None:
        return f"{storage}:0,import-from={disk.source.ref},cache={disk.cache}"
    return f"{storage}:{size_gib(disk.size_bytes)},cache={disk.cache}"


def cdrom_value(staged: Staged | None) -> str:
    return f"{staged.ref},media=cdrom" if staged is not None else "none,media=cdrom"


def boot_value(order: tuple[str, ...], disks: list[str], cdroms: list[str]) -> str:
    devices: list[str] = []
    for kind in order:
        devices += disks if kind == "disk" else cdroms if kind == "cdrom" else []
    for dev in disks + cdroms:  # anything not named still boots last, in slot order
        if dev not in devices:
            devices.append(dev)
    return "order=" + ";".join(devices)


def create_params(spec: VMSpec, *, vmid: int, disk_storage: str) -> dict[str, Any]:
    check_name(spec.name)
    if not spec.disks:
        raise InvalidInput(f"VM {spec.name} has no disk")
    dkeys = disk_keys(spec.disks)
    ckeys = [cdrom_key(i) for i in range(len(spec.cdroms))]
    if set(dkeys) & set(ckeys):
        raise InvalidInput(f"VM {spec.name}: IDE disks and CD-ROMs need more than four IDE slots")
    params: dict[str, Any] = {
        "vmid": vmid,
        "name": spec.name,
        "ostype": "l26",
        "cores": spec.cores,
        "sockets": 1,
        "memory": str(spec.memory_mib),
        "cpu": spec.cpu or "kvm64",
        "agent": f"enabled={bool01(spec.agent)}",
        "vga": spec.display,  # qxl: SPICE
        "serial0": "socket",
        "boot": boot_value(spec.boot, dkeys, ckeys),
        "bios": spec.bios,
        "tags": TAG,
    }
    description = spec.description[:7900]
    if spec.inputs:
        description += f"\n{INPUTS_PREFIX}{spec.inputs}"
    if description.strip():
        params["description"] = description.strip()
    if spec.bios == "ovmf":
        params["efidisk0"] = f"{disk_storage}:1,efitype=4m,pre-enrolled-keys=0"
    if any(d.bus == "scsi" for d in spec.disks):
        params["scsihw"] = "virtio-scsi-single"
    for key, disk in zip(dkeys, spec.disks, strict=True):
        params[key] = disk_value(disk, disk_storage)
    for key, staged in zip(ckeys, spec.cdroms, strict=True):
        params[key] = cdrom_value(staged)
    for i, nic in enumerate(spec.nics):
        params[f"net{i}"] = net_value(nic)
    if spec.nics and spec.network.mode == "static" and spec.network.address:
        params["ipconfig0"] = ipconfig_value(spec.network.address, spec.network.gateway)
    return params


def ipconfig_value(address: str, gateway: str | None) -> str:
    """The guest's static address as PVE records it (``ipconfig0``). Without a cloud-init drive PVE only
    stores it (imgbuild's own seed ISO configures the guest); it documents the VM's address in PVE and
    tells a bridge-less stand-in (the test simulator) which subnet the guest lives on."""
    v6 = ":" in address
    value = f"{'ip6' if v6 else 'ip'}={address}"
    if gateway:
        value += f",{'gw6' if v6 else 'gw'}={gateway}"
    return value


# --- reading PVE's answers ----------------------------------------------------------------------


def parse_property_string(value: str, default_key: str | None = None) -> dict[str, str]:
    """``a=1,b=2`` -> {"a": "1", "b": "2"}; a leading bare value goes to *default_key*."""
    out: dict[str, str] = {}
    for i, part in enumerate(p for p in str(value).split(",") if p):
        key, sep, val = part.partition("=")
        if not sep:
            if i == 0 and default_key:
                out[default_key] = key
                continue
            out[key] = ""
        else:
            out[key] = val
    return out


NIC_MODELS = ("virtio", "e1000", "e1000e", "rtl8139", "vmxnet3", "e1000-82540em", "e1000-82544gc",
              "e1000-82545em", "i82551", "i82557b", "i82559er", "ne2k_isa", "ne2k_pci", "pcnet")


def with_mac(net: str, mac: str) -> str:
    """*net* (a ``netN`` value) with its MAC address replaced, everything else kept in order."""
    parts = []
    replaced = False
    for part in net.split(","):
        key, sep, _ = part.partition("=")
        if sep and (key in NIC_MODELS or key == "macaddr") and not replaced:
            parts.append(f"{key}={mac.upper()}")
            replaced = True
        elif key == "model" and sep:
            parts.append(f"{part.split('=', 1)[1]}={mac.upper()}")
            replaced = True
        else:
            parts.append(part)
    if not replaced:
        parts.insert(0, f"virtio={mac.upper()}")
    return ",".join(parts)


def drive_size_bytes(value: str) -> int | None:
    size = parse_property_string(value, "file").get("size")
    if not size:
        return None
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([KMGT]?)", size)
    if not m:
        return None
    mult = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[m.group(2)]
    return int(float(m.group(1)) * mult)


INPUTS_PREFIX = "imgbuild-inputs: "


def inputs_of(config: dict[str, Any]) -> str | None:
    """The inputs key imgbuild wrote into the VM's description, if any."""
    for line in str(config.get("description") or "").splitlines():
        if line.startswith(INPUTS_PREFIX):
            return line[len(INPUTS_PREFIX):].strip() or None
    return None


def tags_of(config: dict[str, Any]) -> set[str]:
    return {t for t in re.split(r"[;, ]+", str(config.get("tags") or "")) if t}


# --- releases: labels are tags beside TAG; a release's manifest rides in the description -------------------
MANIFEST_PREFIX = "imgbuild-manifest: xz+base64:"
MANIFEST_REF_PREFIX = "imgbuild-manifest-sha256: "
DESCRIPTION_MAX = 8192  # qemu-server's config schema: description maxLength


def tags_value(labels: set[str]) -> str:
    """PVE's tag list (pve-tag-list, ';'-separated): TAG first, then the labels, sorted."""
    return ";".join([TAG, *sorted(labels - {TAG})])


def with_manifest(description: str, manifest: str) -> tuple[str, bool]:
    """*description* with the manifest in it (xz, base64) when that fits PVE's limit, else with its sha256
    only. Returns the new description and whether the manifest itself went in."""
    kept = [line for line in description.splitlines()
            if not line.startswith((MANIFEST_PREFIX, MANIFEST_REF_PREFIX))]
    raw = manifest.encode()
    packed = base64.b64encode(lzma.compress(raw, preset=9)).decode()
    full = "\n".join([*kept, MANIFEST_PREFIX + packed])
    if len(full) <= DESCRIPTION_MAX:
        return full, True
    return "\n".join([*kept, MANIFEST_REF_PREFIX + hashlib.sha256(raw).hexdigest()]), False


def manifest_in(config: dict[str, Any]) -> str | None:
    for line in str(config.get("description") or "").splitlines():
        if line.startswith(MANIFEST_PREFIX):
            try:
                return lzma.decompress(base64.b64decode(line[len(MANIFEST_PREFIX):])).decode()
            except (ValueError, lzma.LZMAError, UnicodeDecodeError):
                return None
    return None
