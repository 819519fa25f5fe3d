"""PVE's named parameter formats, coded by hand from pve-common, pve-storage and qemu-server.

The API schema only names these formats (``format: "pve-node"``) or gives a type text; their rules
live in Perl. Two kinds exist, as in ``PVE::JSONSchema::register_format``:

- code formats: a function that raises ``FormatError`` with PVE's message (ending in a newline);
- hash formats: a property-string sub-schema (a dict like the inline formats of the schema file),
  optionally followed by a validator run on the parsed result.

``schema.check_format`` dispatches on these tables, including the ``-list``/``-opt`` suffixes.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Callable
from typing import Any

CONFIGID_RE = r"[a-z][a-z0-9_-]+"
IPV4OCTET = r"(?:25[0-5]|(?:2[0-4]|1[0-9]|[1-9])?[0-9])"
IPV4RE = rf"(?:(?:{IPV4OCTET}\.){{3}}{IPV4OCTET})"
PVE_TAG_RE = r"[a-z0-9_][a-z0-9_\-\+\.]*"

# Drive buses and their counts (qemu-server PVE::QemuServer::Drive).
DRIVE_COUNTS = {"ide": 4, "sata": 6, "scsi": 31, "virtio": 16}
# Every numbered option of a VM config and how many there are.
NUMBERED = {
    "net": 32,
    "ipconfig": 32,
    "ide": 4,
    "sata": 6,
    "scsi": 31,
    "virtio": 16,
    "serial": 4,
    "unused": 256,
    "hostpci": 16,
    "usb": 14,
    "numa": 8,
    "parallel": 3,
    "virtiofs": 10,
    # numbered options of methods the simulator does not serve (so only their names must parse):
    "mp": 256,  # pve-container PVE/LXC/Config.pm $MAX_MOUNT_POINTS
    "dev": 256,  # pve-container PVE/LXC/Config.pm $MAX_DEVICES
    "link": 8,  # pve-cluster PVE/Corosync.pm $MAX_LINK_INDEX = 7 (link0..link7)
    "acmedomain": 5,  # pve-manager PVE/NodeConfig.pm $MAXDOMAINS
}


class FormatError(Exception):
    """A value does not satisfy a format. ``text`` is PVE's message (newline-terminated).

    ``errors`` is set for property strings (sub-key path -> message), like PVE's exception.
    """

    def __init__(self, text: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.text = text
        self.errors = errors or {}

    def stringify(self) -> str:
        """Like ``PVE::Exception::stringify``: message, then one ``key: msg`` line per error."""
        out = self.text if self.text.endswith("\n") else self.text + "\n"
        for key in sorted(self.errors):
            out += f"{key}: {self.errors[key]}\n"
        return out


def _m(pattern: str, value: str, flags: int = 0) -> bool:
    """Perl's ``$value =~ m/PATTERN/`` (search; ``$`` also matches before a final newline)."""
    return re.search(pattern, value, flags) is not None


# --- code formats (pve-common JSONSchema.pm) -------------------------------------------------


def pve_verify_urlencoded(v: str) -> None:
    if not _m(r"^[-%a-zA-Z0-9_.!~*'()]*$", v):
        raise FormatError(f"invalid urlencoded string: {v}\n")


def pve_verify_configid(v: str) -> None:
    if not _m(rf"^{CONFIGID_RE}$", v, re.I):
        raise FormatError(f"invalid configuration ID '{v}'\n")


def parse_storage_id(v: str) -> None:
    if not _m(r"^[a-z][a-z0-9\-\_\.]*[a-z0-9]$", v, re.I):
        raise FormatError(f"storage ID '{v}' contains illegal characters\n")


def parse_bridge_id(v: str) -> None:
    if not _m(r"^[-_.\w\d]+$", v):
        raise FormatError(f"invalid bridge ID '{v}'\n")


def pve_verify_vmid(v: str) -> None:
    if not _m(r"^[1-9][0-9]{2,8}$", v):
        raise FormatError("value does not look like a valid VM ID\n")


def pve_verify_node_name(v: str) -> None:
    if not _m(r"^([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)$", v):
        raise FormatError("value does not look like a valid node name\n")


def pve_verify_mac_addr(v: str) -> None:
    if not _m(r"^[a-f0-9][02468ace](?::[a-f0-9]{2}){5}$", v, re.I):
        raise FormatError("value does not look like a valid unicast MAC address\n")


def is_ipv4(v: str) -> bool:
    return _m(rf"^(?:{IPV4RE})$", v)


def is_ipv6(v: str) -> bool:
    if "%" in v or v.endswith("\n") or not _m(r"^[0-9a-fA-F:.]+$", v):
        return False
    try:
        ipaddress.IPv6Address(v)
    except ValueError:
        return False
    return True


def pve_verify_ipv4(v: str) -> None:
    if not is_ipv4(v):
        raise FormatError("value does not look like a valid IPv4 address\n")


def pve_verify_ipv6(v: str) -> None:
    if not is_ipv6(v):
        raise FormatError("value does not look like a valid IPv6 address\n")


def pve_verify_ip(v: str) -> None:
    if not (is_ipv4(v) or is_ipv6(v)):
        raise FormatError("value does not look like a valid IP address\n")


def _cidr(v: str, is_ip: Callable[[str], bool], low: int, high: int) -> bool:
    m = re.match(r"^(.*)/(\d+)$", v)
    return bool(m and is_ip(m.group(1)) and low < int(m.group(2)) <= high)


def pve_verify_cidrv4(v: str) -> None:
    if not _cidr(v, is_ipv4, 7, 32):
        raise FormatError("value does not look like a valid IPv4 CIDR network\n")


def pve_verify_cidrv6(v: str) -> None:
    if not _cidr(v, is_ipv6, 7, 128):
        raise FormatError("value does not look like a valid IPv6 CIDR network\n")


def pve_verify_cidr(v: str) -> None:
    if not (_cidr(v, is_ipv4, 7, 32) or _cidr(v, is_ipv6, 7, 128)):
        raise FormatError("value does not look like a valid CIDR network\n")


def pve_verify_ipv4_config(v: str) -> None:
    if _m(r"^(?:dhcp|manual)$", v) or _cidr(v, is_ipv4, 7, 32):
        return
    raise FormatError("value does not look like a valid ipv4 network configuration\n")


def pve_verify_ipv6_config(v: str) -> None:
    if _m(r"^(?:auto|dhcp|manual)$", v) or _cidr(v, is_ipv6, 7, 128):
        return
    raise FormatError("value does not look like a valid ipv6 network configuration\n")


DNS_NAME_RE = r"([a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?)"


def is_dns_name(v: str) -> bool:
    return _m(rf"^({DNS_NAME_RE}\.)*{DNS_NAME_RE}$", v)


def pve_verify_dns_name(v: str) -> None:
    if not is_dns_name(v):
        raise FormatError("value does not look like a valid DNS name\n")


def pve_verify_address(v: str) -> None:
    if not (is_ipv4(v) or is_ipv6(v) or is_dns_name(v)):
        raise FormatError(f"value does not look like a valid address: {v}\n")


def parse_size(v: str) -> int | None:
    """``PVE::JSONSchema::parse_size``: bytes for ``32``, ``1.5G``, ``512M`` ... or None."""
    m = re.match(r"^(\d+(\.\d+)?)([KMGT])?$", v)
    if not m:
        return None
    size = float(m.group(1))
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(m.group(3) or "", 1)
    return int(size * mult)


def format_size(size: int) -> str:
    """``PVE::JSONSchema::format_size``: the largest exact unit (``32G``, ``512M``, ``1025K``)."""
    size = int(size)
    kb, rest = divmod(size, 1024)
    if rest:
        return str(size)
    mb, rest = divmod(kb, 1024)
    if rest:
        return f"{kb}K"
    gb, rest = divmod(mb, 1024)
    if rest:
        return f"{mb}M"
    tb, rest = divmod(gb, 1024)
    if rest:
        return f"{gb}G"
    return f"{tb}T"


def pve_verify_disk_size(v: str) -> None:
    if parse_size(v) is None:
        raise FormatError(f"value does not look like a valid disk size: {v}\n")


def pve_verify_startup_order(v: str) -> None:
    ok = bool(v)
    for part in v.split(","):
        if re.match(r"^\s*$", part):
            continue
        if not (_m(r"^(order=)?(\d+)$", part) or _m(r"^up=(\d+)$", part) or _m(r"^down=(\d+)$", part)):
            ok = False
    if not ok:
        raise FormatError("unable to parse startup options\n")


def pve_verify_tag(v: str) -> None:
    if not _m(rf"^{PVE_TAG_RE}$", v, re.I):
        raise FormatError("invalid characters in tag\n")


def verify_task_status_type(v: str) -> None:
    if not _m(r"^(ok|error|warning|unknown)$", v, re.I):
        raise FormatError(f"invalid status '{v}'\n")


def pve_verify_poolid(v: str) -> None:
    if not _m(r"^[A-Za-z0-9_][A-Za-z0-9_\-]+$", v):
        raise FormatError(f"pool name '{v}' contains illegal characters\n")


def pve_verify_realm(v: str) -> None:
    if not _m(r"^[A-Za-z][A-Za-z\.\-_0-9]+$", v):
        raise FormatError(f"realm '{v}' contains illegal characters\n")


def pve_verify_priv(v: str) -> None:
    if not _m(r"^[A-Za-z][A-Za-z.]+$", v):
        raise FormatError(f"invalid privilege name '{v}'\n")


STORAGE_CONTENT_TYPES = ("images", "rootdir", "vztmpl", "iso", "backup", "snippets", "import")


def verify_content(v: str) -> None:
    if v not in STORAGE_CONTENT_TYPES:
        raise FormatError(f"invalid content type '{v}'\n")


def pve_verify_cpuset(v: str) -> None:
    """``PVE::CpuSet::parse_cpuset``: ``0,5,8-11``."""
    ok = bool(v.strip())
    for part in re.split(r"[,;]", v):
        m = re.match(r"^\s*(\d+)(?:-(\d+))?\s*$", part)
        if not m or (m.group(2) is not None and int(m.group(2)) < int(m.group(1))):
            ok = False
    if not ok:
        raise FormatError("unable to parse cpuset option\n")


def verify_hotplug_features(v: str) -> None:
    if v in ("0", "1"):
        return
    for item in re.split(r"[;,\s]+", v.strip()):
        if item and item not in ("network", "disk", "cpu", "memory", "usb", "cloudinit"):
            raise FormatError(f"invalid hotplug feature '{item}'\n")


def verify_storagepair(v: str) -> None:
    m = re.match(r"^([^:]+):([^:]+)$", v)
    parts = [m.group(1), m.group(2)] if m else ([] if v == "1" else [v])
    for part in parts:
        try:
            parse_storage_id(part)
        except FormatError as exc:
            raise FormatError(f"entry '{v}' contains invalid ID - {exc.text}\n") from None


def parse_volume_id(v: str) -> tuple[str, str] | None:
    """``PVE::Storage::Plugin::parse_volume_id``: (storage, volname) or None."""
    m = re.match(r"^([a-z][a-z0-9\-\_\.]*[a-z0-9]):(.+)$", v, re.I | re.S)
    return (m.group(1), m.group(2)) if m else None


def verify_volume_id(v: str) -> None:
    if parse_volume_id(v) is None:
        raise FormatError(f"unable to parse volume ID '{v}'\n")


def verify_volume_id_or_absolute_path(v: str) -> None:
    if v.startswith("/"):
        return
    verify_volume_id(v)


def verify_volume_id_or_qm_path(v: str) -> None:
    if v in ("none", "cdrom"):
        return
    verify_volume_id_or_absolute_path(v)


def drive_names() -> list[str]:
    names = [f"{bus}{i}" for bus, n in DRIVE_COUNTS.items() for i in range(n)]
    return [*names, "efidisk0", "tpmstate0"]


def is_valid_drivename(v: str) -> bool:
    return v in drive_names()


def verify_bootdisk(v: str) -> None:
    if not is_valid_drivename(v) or v in ("efidisk0", "tpmstate0"):
        raise FormatError(f"invalid boot disk '{v}'\n")


def verify_bootdev(v: str) -> None:
    if is_valid_drivename(v) and not v.startswith(("efidisk", "tpmstate")):
        return
    for base in ("net", "usb", "hostpci"):
        m = re.match(rf"^{base}(\d+)$", v)
        if m and int(m.group(1)) < NUMBERED[base]:
            return
    raise FormatError(f"invalid boot device '{v}'\n")


def verify_phys_bits(v: str) -> None:
    msg = "value must be an integer between 8 and 64 or 'host'\n"
    if not _m(r"^(host|\d{1,2})$", v):
        raise FormatError(msg)
    if v.isdigit() and not 8 <= int(v) <= 64:
        raise FormatError(msg)


def parse_sdn_id(kind: str) -> Callable[[str], None]:
    """pve-network src/PVE/Network/SDN/Zones/Plugin.pm parse_sdn_zone_id (VnetPlugin.pm: parse_sdn_vnet_id)."""

    def check(v: str) -> None:
        if not _m(r"^[a-z][a-z0-9]*[a-z0-9]$", v, re.I):
            raise FormatError(f"{kind} ID '{v}' contains illegal characters\n")
        if len(v) > 8:
            raise FormatError(f"{kind} ID '{v}' can't be more length than 8 characters\n")

    return check


def parse_sdn_subnet_id(v: str) -> None:
    """pve-network src/PVE/Network/SDN/SubnetPlugin.pm parse_sdn_subnet_id: a CIDR or <zone>-<ip>-<mask>."""
    cidr = v if "/" in v else "/".join(v.split("-")[1:3])
    try:
        pve_verify_cidr(cidr)
    except FormatError:
        raise FormatError("value does not look like a valid CIDR network\n") from None


def pve_verify_node_list(v: str) -> None:
    """pve-common: pve-node-list, a list of node names."""
    for item in split_list(v):
        pve_verify_node_name(item)


CODE_FORMATS: dict[str, Callable[[str], None]] = {
    "pve-sdn-zone-id": parse_sdn_id("zone"),
    "pve-sdn-vnet-id": parse_sdn_id("vnet"),
    "pve-sdn-subnet-id": parse_sdn_subnet_id,
    "pve-node-list": pve_verify_node_list,
    "string": lambda v: None,
    "urlencoded": pve_verify_urlencoded,
    "pve-configid": pve_verify_configid,
    "pve-storage-id": parse_storage_id,
    "pve-bridge-id": parse_bridge_id,
    "pve-vmid": pve_verify_vmid,
    "pve-node": pve_verify_node_name,
    "mac-addr": pve_verify_mac_addr,
    "ipv4": pve_verify_ipv4,
    "ipv6": pve_verify_ipv6,
    "ip": pve_verify_ip,
    "CIDRv4": pve_verify_cidrv4,
    "CIDRv6": pve_verify_cidrv6,
    "CIDR": pve_verify_cidr,
    "pve-ipv4-config": pve_verify_ipv4_config,
    "pve-ipv6-config": pve_verify_ipv6_config,
    "dns-name": pve_verify_dns_name,
    "address": pve_verify_address,
    "disk-size": pve_verify_disk_size,
    "pve-startup-order": pve_verify_startup_order,
    "pve-tag": pve_verify_tag,
    "pve-task-status-type": verify_task_status_type,
    "pve-poolid": pve_verify_poolid,
    "pve-realm": pve_verify_realm,
    "pve-priv": pve_verify_priv,
    "pve-storage-content": verify_content,
    "pve-cpuset": pve_verify_cpuset,
    "pve-hotplug-features": verify_hotplug_features,
    "storage-pair": verify_storagepair,
    "pve-volume-id": verify_volume_id,
    "pve-volume-id-or-absolute-path": verify_volume_id_or_absolute_path,
    "pve-volume-id-or-qm-path": verify_volume_id_or_qm_path,
    "pve-qm-bootdisk": verify_bootdisk,
    "pve-qm-bootdev": verify_bootdev,
    "pve-phys-bits": verify_phys_bits,
}

# --- hash formats (property strings defined in qemu-server) -----------------------------------

_OPT = {"optional": 1}

BOOT_FMT: dict[str, dict[str, Any]] = {
    "legacy": {"optional": 1, "default_key": 1, "type": "string", "pattern": "[acdn]{1,4}"},
    "order": {"optional": 1, "type": "string", "format": "pve-qm-bootdev-list"},
}

IPCONFIG_FMT: dict[str, dict[str, Any]] = {
    "ip": {"type": "string", "format": "pve-ipv4-config", **_OPT},
    "gw": {"type": "string", "format": "ipv4", "requires": "ip", **_OPT},
    "ip6": {"type": "string", "format": "pve-ipv6-config", **_OPT},
    "gw6": {"type": "string", "format": "ipv6", "requires": "ip6", **_OPT},
}

CICUSTOM_FMT: dict[str, dict[str, Any]] = {
    key: {"type": "string", "format": "pve-volume-id", **_OPT} for key in ("meta", "network", "user", "vendor")
}

CPU_VENDOR_LIST = ["486", "pentium", "pentium2", "pentium3", "coreduo", "core2duo", "Conroe", "Penryn", "Nehalem", "Nehalem-IBRS", "Westmere", "Westmere-IBRS", "SandyBridge", "SandyBridge-IBRS", "IvyBridge", "IvyBridge-IBRS", "Haswell", "Haswell-IBRS", "Haswell-noTSX", "Haswell-noTSX-IBRS", "Broadwell", "Broadwell-IBRS", "Broadwell-noTSX", "Broadwell-noTSX-IBRS", "Skylake-Client", "Skylake-Client-IBRS", "Skylake-Client-noTSX-IBRS", "Skylake-Client-v4", "Skylake-Server", "Skylake-Server-IBRS", "Skylake-Server-noTSX-IBRS", "Skylake-Server-v4", "Skylake-Server-v5", "Cascadelake-Server", "Cascadelake-Server-v2", "Cascadelake-Server-noTSX", "Cascadelake-Server-v4", "Cascadelake-Server-v5", "Cooperlake", "Cooperlake-v2", "KnightsMill", "Icelake-Client", "Icelake-Client-noTSX", "Icelake-Server", "Icelake-Server-noTSX", "Icelake-Server-v3", "Icelake-Server-v4", "Icelake-Server-v5", "Icelake-Server-v6", "SapphireRapids", "SapphireRapids-v2", "GraniteRapids", "athlon", "phenom", "Opteron_G1", "Opteron_G2", "Opteron_G3", "Opteron_G4", "Opteron_G5", "EPYC", "EPYC-IBPB", "EPYC-v3", "EPYC-v4", "EPYC-Rome", "EPYC-Rome-v2", "EPYC-Rome-v3", "EPYC-Rome-v4", "EPYC-Milan", "EPYC-Milan-v2", "EPYC-Genoa", "host", "kvm32", "kvm64", "qemu32", "qemu64", "max"]  # noqa: E501
CPU_BUILTIN_MODELS = ("x86-64-v2", "x86-64-v2-AES", "x86-64-v3", "x86-64-v4")
SUPPORTED_CPU_FLAGS = ["pcid", "spec-ctrl", "ibpb", "ssbd", "virt-ssbd", "amd-ssbd", "amd-no-ssb", "pdpe1gb", "md-clear", "hv-tlbflush", "hv-evmcs", "aes"]  # noqa: E501

CPU_FMT: dict[str, dict[str, Any]] = {
    "cputype": {"type": "string", "default_key": 1, **_OPT},
    "reported-model": {"type": "string", "enum": sorted(CPU_VENDOR_LIST, key=str.lower), **_OPT},
    "hidden": {"type": "boolean", **_OPT},
    "hv-vendor-id": {"type": "string", "pattern": "(?^:[a-zA-Z0-9]{1,12})", **_OPT},
    "flags": {"type": "string", "pattern": r"(?^:(?^:([+-])([a-zA-Z0-9\-_\.]+))(;(?^:([+-])([a-zA-Z0-9\-_\.]+)))*)", **_OPT},
    "phys-bits": {"type": "string", "format": "pve-phys-bits", **_OPT},
}


def validate_vm_cpu_conf(cpu: dict[str, Any]) -> None:
    cputype = cpu.get("cputype")
    if not cputype:
        raise FormatError("CPU is missing cputype\n")
    if cputype.startswith("custom-"):
        raise FormatError(f"Custom cputype '{cputype[7:]}' not found\n")
    if cputype not in CPU_VENDOR_LIST and cputype not in CPU_BUILTIN_MODELS:
        raise FormatError(f"Built-in cputype '{cputype}' is not defined (missing 'custom-' prefix?)\n")
    flag = rf"([+-])({'|'.join(re.escape(f) for f in SUPPORTED_CPU_FLAGS)})"
    if cpu.get("flags") and not _m(rf"^{flag}(;{flag})*$", cpu["flags"]):
        raise FormatError(f"VM-specific CPU flags must be a subset of: {', '.join(SUPPORTED_CPU_FLAGS)}\n")
    if cpu.get("reported-model") is not None:
        raise FormatError("Property 'reported-model' not allowed in VM-specific CPU config.\n")


WATCHDOG_FMT: dict[str, dict[str, Any]] = {
    "model": {"type": "string", "default_key": 1, "enum": ["i6300esb", "ib700"], **_OPT},
    "action": {"type": "string", "enum": ["reset", "shutdown", "poweroff", "pause", "debug", "none"], **_OPT},
}

RNG_FMT: dict[str, dict[str, Any]] = {
    "source": {"type": "string", "default_key": 1, "enum": ["/dev/urandom", "/dev/random", "/dev/hwrng"]},
    "max_bytes": {"type": "integer", **_OPT},
    "period": {"type": "integer", **_OPT},
}

SMBIOS1_FMT: dict[str, dict[str, Any]] = {
    "uuid": {"type": "string", "pattern": "[a-fA-F0-9]{8}(?:-[a-fA-F0-9]{4}){3}-[a-fA-F0-9]{12}", **_OPT},
    **{k: {"type": "string", "pattern": r"[A-Za-z0-9+\/]+={0,2}", **_OPT} for k in ("version", "serial", "manufacturer", "product", "sku", "family")},  # noqa: E501
    "base64": {"type": "boolean", **_OPT},
}

# pve-network src/PVE/Network/SDN/SubnetPlugin.pm $dhcp_range_fmt
DHCP_RANGE_FMT: dict[str, dict[str, Any]] = {
    "start-address": {"type": "ip"},
    "end-address": {"type": "ip"},
}

HASH_FORMATS: dict[str, dict[str, dict[str, Any]]] = {
    "pve-sdn-dhcp-range": DHCP_RANGE_FMT,
    "pve-qm-boot": BOOT_FMT,
    "pve-qm-ipconfig": IPCONFIG_FMT,
    "pve-qm-cicustom": CICUSTOM_FMT,
    "pve-vm-cpu-conf": CPU_FMT,
    "pve-qm-watchdog": WATCHDOG_FMT,
    "pve-qm-rng": RNG_FMT,
    "pve-qm-smbios1": SMBIOS1_FMT,
    # "pve-qm-ide" (the cdrom option) is the ide[n] drive format: schema.py inlines each version's own.
}

HASH_VALIDATORS: dict[str, Callable[[dict[str, Any]], None]] = {
    "pve-vm-cpu-conf": validate_vm_cpu_conf,
}

# Formats the schema names but this simulator does not model (passthrough hardware, SEV): a
# request using them is rejected and recorded, so a client depending on them is noticed.
NOT_SIMULATED = {"pve-qm-hostpci", "pve-qemu-sev-fmt", "pve-qemu-tdx-fmt",
                 "pve-sdn-bgp-rt", "pve-sdn-fabric-id"}  # EVPN zones and fabrics: not simulated


def split_list(text: str) -> list[str]:
    """``PVE::Tools::split_list``: split on NUL, or on commas, semicolons and white space."""
    if "\0" in text:
        return text.split("\0")
    return [x for x in re.split(r"\s+", re.sub(r"[,;]", " ", text).strip()) if x]
