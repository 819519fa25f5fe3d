"""VMSpec -> PVE configuration (pure), and PVE's own schemas (9.1 and 8.4) accepting every value we send."""

from __future__ import annotations

import pytest

from builder.errors import InvalidInput
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, Staged, VMSpec
from builder.targets.pve import vmconfig
from tests.pvesim.schema import SUPPORTED_VERSIONS, ApiSchema

IMAGE = Staged("image", "local:import/web-server-golden-image-0123456789abcdef.qcow2", "0" * 64, 1 << 30)
SEED = Staged("iso", "local:iso/web-server-seed-0123456789abcdef.iso", "1" * 64, 1 << 20)
INSTALLER = Staged("iso", "local:iso/web-server-installer-0123456789abcdef.iso", "2" * 64, 1 << 27)


def spec(**kw: object) -> VMSpec:
    base: dict[str, object] = dict(
        name="web-server", cores=2, memory_mib=2048, cpu="kvm64", display="qxl",
        disks=(DiskSpec(8 << 30, source=IMAGE),), cdroms=(SEED,),
        nics=(NicSpec("bc:24:11:0a:0b:0c", bridge="vmbr1", vlan=20, firewall=True),),
        network=GuestNetwork("static", address="192.168.1.250/24", gateway="192.168.1.1"),
        description="imgbuild recipe web-server: Apache",
    )
    base.update(kw)
    return VMSpec(**base)  # type: ignore[arg-type]


def test_image_method_config() -> None:
    p = vmconfig.create_params(spec(), vmid=123, disk_storage="local-lvm")
    assert p["virtio0"] == f"local-lvm:0,import-from={IMAGE.ref},cache=none"
    assert p["ide2"] == f"{SEED.ref},media=cdrom"
    assert p["net0"] == "virtio=BC:24:11:0A:0B:0C,bridge=vmbr1,firewall=1,tag=20"
    assert p["boot"] == "order=virtio0;ide2"
    assert (p["vga"], p["cpu"], p["ostype"], p["agent"], p["serial0"]) == ("qxl", "kvm64", "l26", "enabled=1", "socket")
    assert (p["name"], p["vmid"], p["memory"], p["cores"]) == ("web-server", 123, "2048", 2)
    assert p["ipconfig0"] == "ip=192.168.1.250/24,gw=192.168.1.1"
    assert vmconfig.TAG in p["tags"]


def test_installer_method_config() -> None:
    s = spec(disks=(DiskSpec(10 * 1024**3 + 1),), cdroms=(INSTALLER, SEED), nics=(NicSpec("BC:24:11:00:00:01"),),
             network=GuestNetwork("dhcp"), display="std", bios="ovmf")
    p = vmconfig.create_params(s, vmid=100, disk_storage="tank")
    assert p["virtio0"] == "tank:11,cache=none"  # rounded up to whole GiB
    assert p["ide2"] == f"{INSTALLER.ref},media=cdrom" and p["ide3"] == f"{SEED.ref},media=cdrom"
    assert p["boot"] == "order=virtio0;ide2;ide3"
    assert p["net0"] == "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=0"
    assert p["bios"] == "ovmf" and p["efidisk0"].startswith("tank:1,")
    assert "ipconfig0" not in p


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_every_value_passes_pve_schema(version: str) -> None:
    """Booleans as 0/1, property strings, named formats: what PVE's own schema accepts (9.1 and 8.4)."""
    endpoint = ApiSchema.load(version).find("POST", "/nodes/{node}/qemu")
    for s in (spec(), spec(disks=(DiskSpec(4 << 30, bus="scsi"),), cdroms=(INSTALLER, SEED), bios="ovmf",
                           network=GuestNetwork("dhcp"), nics=(NicSpec("BC:24:11:00:00:02", model="e1000"),))):
        params = {k: str(v) for k, v in vmconfig.create_params(s, vmid=100, disk_storage="local-lvm").items()}
        params["node"] = "pve"
        assert ApiSchema.validate(endpoint, params) == {}


def test_names_and_slots_are_checked() -> None:
    with pytest.raises(InvalidInput, match="not valid on Proxmox VE"):
        vmconfig.create_params(spec(name="web_server"), vmid=100, disk_storage="local-lvm")
    with pytest.raises(InvalidInput, match="slot 4"):
        vmconfig.cdrom_key(4)


def test_mac_replacement_keeps_the_rest() -> None:
    net = "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20"
    assert vmconfig.with_mac(net, "bc:24:11:aa:bb:cc") == "virtio=BC:24:11:AA:BB:CC,bridge=vmbr0,firewall=1,tag=20"
    assert vmconfig.drive_size_bytes("local-lvm:vm-100-disk-0,cache=none,size=8G") == 8 << 30
    assert vmconfig.parse_property_string("none,media=cdrom", "file") == {"file": "none", "media": "cdrom"}
