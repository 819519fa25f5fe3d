"""The local target's state is one typed record, validated on read; a corrupt record breaks only its VM.

A VM whose state.json is damaged shows as "broken" in ``imgbuild status`` (the other VMs as usual)
and ``imgbuild destroy`` removes it, its QEMU included; nothing ends in a traceback.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import fields
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.targets.base import DiskSpec, NicSpec, VMSpec
from builder.targets.local import LocalTarget, LocalVM
from builder.targets.local.state import STATE_VERSION, VMState, load_state, process_alive
from tests.hardening.conftest import assert_no_traceback, cli


def make_vm(target: LocalTarget, name: str, mac: str = "52:54:00:00:00:01") -> LocalVM:
    vm = target.create_vm(VMSpec(name=name, disks=(DiskSpec(1 << 30),), nics=(NicSpec(mac),)))
    assert isinstance(vm, LocalVM) and vm.state is not None
    return vm


def test_the_record_on_disk_is_the_dataclass_and_reads_back_equal(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    vm = make_vm(target, "web")
    assert vm.state is not None
    path = target.vm_dir("web") / "state.json"
    on_disk = json.loads(path.read_text())
    assert set(on_disk) == {f.name for f in fields(VMState)} | {"version"}
    assert on_disk["version"] == STATE_VERSION and path.stat().st_mode & 0o777 == 0o600
    assert load_state(target.vm_dir("web"), (target.vm_dir("web"),)) == vm.state
    found = target.find_vm("web")
    assert isinstance(found, LocalVM) and found.state == vm.state and not found.broken


def test_a_record_from_before_the_first_boot_fields_reads(tmp_path: Path) -> None:
    """tcg_threads and console_offset are written by the first start; older records lack them."""
    target = LocalTarget(tmp_path / "out")
    make_vm(target, "web")
    path = target.vm_dir("web") / "state.json"
    data = json.loads(path.read_text())
    del data["tcg_threads"], data["console_offset"]
    path.write_text(json.dumps(data))
    found = target.find_vm("web")
    assert isinstance(found, LocalVM) and found.state is not None and found.state.console_offset == 0


def _corrupt(data: dict, how: str) -> bytes:
    if how == "not json":
        return b'{"name": "web", '
    if how == "not utf-8":
        return b'{"name": "\xff\xfe"}'
    if how == "a list":
        return b"[1, 2]"
    if how == "another version":
        return json.dumps({**data, "version": 99}).encode()
    if how == "missing field":
        return json.dumps({k: v for k, v in data.items() if k != "disks"}).encode()
    if how == "wrong type":
        return json.dumps({**data, "cores": "two"}).encode()
    if how == "bool for int":
        return json.dumps({**data, "memory_mib": True}).encode()
    if how == "bad forward":
        return json.dumps({**data, "forwards": {"22": 99999999}}).encode()
    if how == "socket dir elsewhere":
        return json.dumps({**data, "sockdir": "/home"}).encode()
    if how == "disk elsewhere":
        return json.dumps({**data, "disks": [{"path": "/etc/passwd", "bus": "virtio", "cache": "none"}]}).encode()
    if how == "empty":
        return b""
    raise AssertionError(how)


CORRUPTIONS = ["not json", "not utf-8", "a list", "another version", "missing field", "wrong type",
               "bool for int", "bad forward", "socket dir elsewhere", "disk elsewhere", "empty"]


@pytest.mark.parametrize("how", CORRUPTIONS)
def test_a_corrupt_record_makes_that_vm_broken_and_nothing_else(tmp_path: Path, how: str) -> None:
    target = LocalTarget(tmp_path / "out")
    make_vm(target, "good", "52:54:00:00:00:01")
    make_vm(target, "bad", "52:54:00:00:00:02")
    path = target.vm_dir("bad") / "state.json"
    path.write_bytes(_corrupt(json.loads(path.read_text()), how))

    bad = target.find_vm("bad")
    assert bad is not None and bad.broken and str(path) in bad.broken
    with pytest.raises(ImgbuildError, match="cannot be used") as raised:
        target.start(bad)
    assert "imgbuild destroy bad" in raised.value.detail
    assert {vm.name: bool(vm.broken) for vm in target.list_vms()} == {"good": False, "bad": True}


def test_status_shows_a_broken_vm_and_destroy_removes_it_with_its_qemu(tmp_path: Path) -> None:
    out = tmp_path / "out"
    target = LocalTarget(out)
    make_vm(target, "good", "52:54:00:00:00:01")
    make_vm(target, "bad", "52:54:00:00:00:02")
    vmdir = target.vm_dir("bad")
    (vmdir / "state.json").write_text("{ truncated by a full disk")
    # A "QEMU" that outlived its record: its command line names its pid file, as qemu_argv's does.
    pidfile = vmdir / "qemu.pid"
    qemu = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)", "-pidfile", str(pidfile)])
    try:
        pidfile.write_text(f"{qemu.pid}\n")
        proc = cli("status", "--json", out=out)
        assert proc.returncode == 0, proc.stderr
        rows = {r["name"]: r for r in json.loads(proc.stdout)["vms"]}
        assert rows["bad"]["state"] == "broken" and "state.json" in rows["bad"]["broken"]
        assert rows["good"]["state"] == "stopped" and rows["good"]["broken"] is None
        text = cli("status", out=out)
        assert "bad is broken" in text.stdout and "imgbuild destroy bad" in text.stdout
        assert_no_traceback(text)

        proc = cli("destroy", "bad", out=out)
        assert proc.returncode == 0, proc.stderr
        assert_no_traceback(proc)
        assert qemu.wait(timeout=10) is not None and not process_alive(qemu.pid, str(pidfile))
        assert not vmdir.exists() and target.find_vm("good") is not None
    finally:
        qemu.kill()
        qemu.wait()


def test_a_broken_vm_keeps_staged_images_it_might_use(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    make_vm(target, "bad")
    (target.vm_dir("bad") / "state.json").write_text("null")
    staged = target.staging_dir / "0123456789abcdef-old.qcow2"
    staged.parent.mkdir(parents=True)
    staged.write_bytes(b"QFI\xfb")
    target._prune_staged_images()
    assert staged.exists()


def test_a_broken_template_with_linked_clones_is_not_destroyed_under_them(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    template = make_vm(target, "golden")
    target.make_template(template)
    target.clone(template, "web-2", full=False)
    (target.vm_dir("golden") / "state.json").write_text("{}")
    broken = target.find_vm("golden")
    assert broken is not None and broken.broken
    with pytest.raises(ImgbuildError, match="linked clones: web-2"):
        target.destroy(broken)
    clone = target.find_vm("web-2")
    assert clone is not None
    target.destroy(clone)
    target.destroy(broken)
    assert target.find_vm("golden") is None


@pytest.mark.parametrize("broken", [False, True])
def test_destroy_removes_the_vms_staged_seeds(tmp_path: Path, broken: bool) -> None:
    """A seed ISO holds the VM's private host key: destroy removes the VM's staged seeds (in a drive, or left
    staged by a run killed before it attached or forgot them), never another VM's."""
    target = LocalTarget(tmp_path / "out")
    seeds = {}
    for name in ("web", "other"):
        iso = tmp_path / f"{name}-seed.iso"
        iso.write_bytes(name.encode() * 1000)
        seeds[name] = target.stage(iso, "iso", label=f"{name}-seed")
    left = tmp_path / "left-seed.iso"
    left.write_bytes(b"an older seed of web")
    older = target.stage(left, "iso", label="web-seed")  # staged, never attached
    target.create_vm(VMSpec(name="web", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:01"),),
                            cdroms=(seeds["web"],)))
    target.create_vm(VMSpec(name="other", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:02"),),
                            cdroms=(seeds["other"],)))
    if broken:
        (target.vm_dir("web") / "state.json").write_text("{")
    vm = target.find_vm("web")
    assert vm is not None
    target.destroy(vm)
    assert not Path(seeds["web"].ref).exists() and not Path(older.ref).exists()
    assert Path(seeds["other"].ref).exists()
