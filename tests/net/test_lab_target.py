"""The lab target without booting: QEMU's command line in the node namespace with taps, the VM record's lab
part, choosing the target, refusing early (before any disk is made) what the lab cannot take, and a VM of one
network never taken for up to date on the other."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import ImgbuildError, InvalidInput
from builder.lab.attach import tap_name
from builder.lab.plan import netns_name
from builder.targets.base import DiskSpec, NicSpec, VMSpec
from builder.targets.local import LocalTarget, LocalVM
from builder.targets.local.qemu_cmd import DiskState, Layout, qemu_argv
from builder.targets.local.state import BrokenState, LabForward, LabNics, load_state, save_state
from builder.targets.select import open_target
from tests.net.conftest import HOSTS, lab_from, lab_name

LAB = lab_name("target")


def layout(**kw: object) -> Layout:
    base = dict(
        name="web", accel="tcg", cores=2, memory_mib=2048, cpu="kvm64", display="std", bios="seabios",
        disks=(DiskState("/x/disk0.qcow2"),), cdroms=("/x/seed.iso",), macs=("BC:24:11:00:00:01",),
        nic_models=("virtio",), slirp=None, forwards={}, boot=("disk", "cdrom"), agent=True,
        console_log="/x/console.log", qmp_socket="/x/qmp.sock", agent_socket="/x/qga.sock", pidfile="/x/qemu.pid",
        taps=("tapabcdef01i0",), netns="imgbuild-lab_node",
    )  # fmt: skip
    base.update(kw)
    return Layout(**base)  # type: ignore[arg-type]


def test_qemu_runs_in_the_node_namespace_on_a_tap() -> None:
    argv = qemu_argv(layout())
    assert argv[:5] == ["ip", "netns", "exec", "imgbuild-lab_node", "qemu-system-x86_64"]
    netdevs = [argv[i + 1] for i, a in enumerate(argv) if a == "-netdev"]
    assert netdevs == ["tap,id=net0,ifname=tapabcdef01i0,script=no,downscript=no"]
    assert "virtio-net-pci,netdev=net0,mac=BC:24:11:00:00:01,id=nic0,romfile=" in argv
    assert not any("hostfwd" in a or a.startswith("user,") for a in argv)


def test_tap_names_fit_ifnamsiz_and_differ_per_vm() -> None:
    names = {tap_name(vm, i) for vm in ("web-server", "nat-guest", "a" * 63) for i in range(3)}
    assert len(names) == 9 and all(len(n) <= 15 for n in names)


def test_the_vm_record_keeps_its_lab_part(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    vm = target.create_vm(VMSpec(name="web", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:01"),)))
    assert isinstance(vm, LocalVM) and vm.state is not None
    vmdir = target.vm_dir("web")
    vm.state.slirp = None
    vm.state.lab = LabNics("lab", "imgbuild-lab_node", ["vmbr0"], [None], [LabForward("192.168.1.250", 22, 40022, 123)])
    save_state(vmdir, vm.state)
    assert load_state(vmdir, (vmdir,)) == vm.state
    data = json.loads((vmdir / "state.json").read_text())
    data["slirp"] = {"net": "10.0.2.0/24", "host": "10.0.2.2", "dns": "10.0.2.3", "guest": "10.0.2.15"}
    (vmdir / "state.json").write_text(json.dumps(data))
    with pytest.raises(BrokenState, match="exactly one of them"):
        load_state(vmdir, (vmdir,))
    del data["slirp"]
    data["lab"]["bridges"] = ["vmbr0", "vmbr1"]
    (vmdir / "state.json").write_text(json.dumps(data))
    with pytest.raises(BrokenState, match="lab bridge"):
        load_state(vmdir, (vmdir,))


def test_choosing_the_lab_target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PROXMOX_URL", raising=False)
    monkeypatch.setenv("IMGBUILD_LAB", "net-env")
    chosen = open_target("lab", tmp_path)
    assert isinstance(chosen, LocalTarget) and chosen.name == "lab" and chosen.lab == "net-env"
    named = open_target("lab:net-other", tmp_path)
    assert isinstance(named, LocalTarget) and named.lab == "net-other"
    local = open_target("local", tmp_path)
    assert isinstance(local, LocalTarget) and local.name == "local" and local.lab is None
    with pytest.raises(InvalidInput, match="lab name"):
        open_target("lab:Bad_Name", tmp_path)


@pytest.fixture(scope="module")
def lab(lab_dir: Path) -> Iterator[None]:
    with lab_from(HOSTS / "chapter.yaml", LAB):
        yield


def spec(name: str, bridge: str, vlan: int | None = None) -> VMSpec:
    return VMSpec(name=name, disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:02", bridge=bridge, vlan=vlan),))


def test_create_vm_on_a_lab_that_is_not_up_fails_before_any_disk(tmp_path: Path, lab_dir: Path) -> None:
    target = LocalTarget(tmp_path / "out", lab="net-absent")
    with pytest.raises(ImgbuildError, match="lab net-absent is not up"):
        target.create_vm(spec("web", "vmbr0"))
    assert not (tmp_path / "out" / "web").exists()


def test_create_vm_on_a_bridge_the_lab_lacks_names_the_bridges(lab: None, tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out", lab=LAB)
    with pytest.raises(ImgbuildError, match=r"has no bridge vmbr7 \(it has vmbr0, vmbr1, vmbr2\)"):
        target.create_vm(spec("web", "vmbr7"))
    with pytest.raises(ImgbuildError, match="not VLAN-aware"):
        target.create_vm(spec("web", "vmbr0", vlan=10))
    assert not (tmp_path / "out" / "web").exists()


def test_lab_and_local_vms_are_told_apart(lab: None, tmp_path: Path) -> None:
    out = tmp_path / "out"
    on_lab = LocalTarget(out, lab=LAB).create_vm(VMSpec(name="a", disks=(DiskSpec(1 << 30),), inputs="k",
                                                        nics=(NicSpec("52:54:00:00:00:03", bridge="vmbr1"),)))
    assert isinstance(on_lab, LocalVM) and on_lab.state is not None and on_lab.state.lab is not None
    assert on_lab.state.slirp is None and on_lab.state.lab.bridges == ["vmbr1"]
    assert on_lab.state.lab.netns == netns_name(LAB, "node")
    LocalTarget(out).create_vm(VMSpec(name="b", disks=(DiskSpec(1 << 30),), inputs="k",
                                      nics=(NicSpec("52:54:00:00:00:04"),)))
    local, lab_target = LocalTarget(out), LocalTarget(out, lab=LAB)
    assert [vm.name for vm in local.list_vms()] == ["b"] and [vm.name for vm in lab_target.list_vms()] == ["a"]
    a, b = local.find_vm("a"), local.find_vm("b")
    assert a is not None and b is not None
    assert local.built_from(b) == "k" and lab_target.built_from(b) is None  # make on the lab replaces it
    assert lab_target.built_from(a) == "k" and local.built_from(a) is None
    assert lab_target.installer_log_host(spec("a", "vmbr1").network) is None
