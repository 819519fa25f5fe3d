"""VM lifecycle on the simulator: create, start, agent address, media, shutdown, destroy, template, clone."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.recipe.model import derived_mac
from builder.targets.base import VM, DiskSpec, GuestNetwork, NicSpec, Staged, VMSpec
from builder.targets.pve.target import PveTarget
from tests.pve.conftest import no_orphans
from tests.pvesim.simulator import PveSimulator

MAC = "BC:24:11:12:34:56"


def make_spec(image: Staged | None, seed: Staged, **kw: object) -> VMSpec:
    base: dict[str, object] = dict(
        name="web-server", disks=(DiskSpec(4 << 30, source=image),), cdroms=(seed,),
        nics=(NicSpec(MAC, bridge="vmbr0", vlan=20, firewall=True),),
        network=GuestNetwork("static", address="192.168.1.250/24", gateway="192.168.1.1"), display="qxl",
    )
    base.update(kw)
    return VMSpec(**base)  # type: ignore[arg-type]


@pytest.fixture
def staged(target: PveTarget, small_iso: Path, small_qcow2: Path) -> tuple[Staged, Staged]:
    return (target.stage(small_qcow2, "image", label="web-server golden image"),
            target.stage(small_iso, "iso", label="web-server-seed"))


def test_create_image_method_vm(target: PveTarget, pve_sim: PveSimulator, staged: tuple[Staged, Staged]) -> None:
    image, seed = staged
    vm = target.create_vm(make_spec(image, seed, vmid=250))
    assert vm.ident == "250" and vm.name == "web-server"
    cfg = pve_sim.vm_config(250)
    assert cfg["virtio0"].startswith("local-lvm:vm-250-disk-0,cache=none,size=4G")  # imported, then grown
    assert cfg["ide2"].startswith(f"{seed.ref},media=cdrom")
    assert cfg["net0"] == f"virtio={MAC},bridge=vmbr0,firewall=1,tag=20"
    assert (cfg["vga"], cfg["cpu"], cfg["ostype"], cfg["agent"], cfg["boot"]) == (
        "qxl", "kvm64", "l26", "enabled=1", "order=virtio0;ide2")
    assert target.find_vm("web-server").ident == "250"  # type: ignore[union-attr]
    with pytest.raises(ImgbuildError, match="vmid 250 is already in use"):
        target.create_vm(make_spec(image, seed, name="other", vmid=250))
    target.destroy(vm)
    target.destroy(vm)  # idempotent
    assert pve_sim.vm_ids() == []


def test_boot_address_media_and_shutdown(target: PveTarget, pve_sim: PveSimulator,
                                         staged: tuple[Staged, Staged]) -> None:
    image, seed = staged
    vm = target.create_vm(make_spec(image, seed))
    assert not target.is_running(vm)
    target.start(vm)
    target.start(vm)  # already running: nothing to do
    assert target.is_running(vm)
    assert target.guest_addresses(vm, timeout=5) == ["192.168.1.250"]  # lo and fe80:: skipped
    assert target.endpoint(vm, "192.168.1.250", 22).host == "192.168.1.250"
    target.set_cdrom(vm, 0, None)
    assert pve_sim.vm_config(int(vm.ident))["ide2"].startswith("none,media=cdrom")
    posts = len(pve_sim.requests_matching("POST", r"/config$"))
    target.set_cdrom(vm, 0, None)  # already empty: no change sent
    assert len(pve_sim.requests_matching("POST", r"/config$")) == posts
    target.set_cdrom(vm, 0, seed)
    target.set_boot(vm, ("cdrom", "disk"))
    assert pve_sim.vm_config(int(vm.ident))["boot"] == "order=ide2;virtio0"
    target.shutdown(vm, timeout=10)
    assert not target.is_running(vm)
    target.shutdown(vm)  # already stopped
    target.destroy(vm)
    target.unstage(seed)
    no_orphans(pve_sim, keep=lambda v: v == image.ref)


def test_agent_not_running_is_retried_until_it_answers(target: PveTarget, pve_sim: PveSimulator,
                                                      staged: tuple[Staged, Staged]) -> None:
    vm = target.create_vm(make_spec(*staged))
    target.start(vm)
    rule = pve_sim.faults.agent_not_running(int(vm.ident), count=2)
    target._sleep = lambda s: time.sleep(0.05)  # type: ignore[method-assign]
    assert target.guest_addresses(vm, timeout=10) == ["192.168.1.250"]
    assert rule.hits == 2
    target.destroy(vm)


def test_agent_never_running_is_a_clear_error(target: PveTarget, pve_sim: PveSimulator,
                                              staged: tuple[Staged, Staged]) -> None:
    vm = target.create_vm(make_spec(*staged))
    target.start(vm)
    pve_sim.faults.agent_not_running(int(vm.ident), count=None)
    target._sleep = lambda s: time.sleep(0.05)  # type: ignore[method-assign]
    with pytest.raises(ImgbuildError, match=r"no address from the guest agent .* within 1s: QEMU guest agent is not running"):
        target.guest_addresses(vm, timeout=1)
    target.destroy(vm)
    assert pve_sim.vm_ids() == []


def test_failed_create_leaves_nothing(target: PveTarget, pve_sim: PveSimulator, staged: tuple[Staged, Staged]) -> None:
    pve_sim.faults.fail_task("qmcreate", message="unable to create image: got lock timeout - aborting command")
    with pytest.raises(ImgbuildError, match="creation of VM 100 .* failed on Proxmox VE: unable to create image"):
        target.create_vm(make_spec(*staged))
    assert pve_sim.vm_ids() == []


def test_refuses_vms_it_did_not_create(target: PveTarget, pve_sim: PveSimulator) -> None:
    target.client.run("POST", "/nodes/pve/qemu", what="create", wait=10, vmid=300, name="precious", memory="256")
    vm = target.find_vm("precious")
    assert vm is not None
    with pytest.raises(ImgbuildError, match="was not created by imgbuild"):
        target.destroy(vm)
    assert pve_sim.vm_ids() == [300]
    target.client.run("DELETE", "/nodes/pve/qemu/300", what="cleanup", wait=10)


def test_template_and_clones(target: PveTarget, pve_sim: PveSimulator, staged: tuple[Staged, Staged],
                             small_iso: Path) -> None:
    image, seed = staged
    vm = target.create_vm(make_spec(image, seed))
    target.start(vm)
    with pytest.raises(ImgbuildError, match="is running; shut it down"):
        target.make_template(vm)
    with pytest.raises(ImgbuildError, match="a linked clone needs a template"):
        target.clone(vm, "clone-a", full=False)
    target.shutdown(vm, timeout=10)
    target.set_cdrom(vm, 0, None)
    target.unstage(seed)
    full = target.clone(vm, "clone-full", full=True)
    target.make_template(vm)
    assert pve_sim.vm_config(int(vm.ident))["template"] == "1"
    clone_seed = target.stage(small_iso, "iso", label="clone-a-seed")
    linked = target.clone(vm, "clone-a", full=False, seed=clone_seed)
    cfg = pve_sim.vm_config(int(linked.ident))
    assert cfg["name"] == "clone-a" and int(linked.ident) not in (int(vm.ident), int(full.ident))
    assert cfg["net0"].startswith(f"virtio={derived_mac('clone-a')},bridge=vmbr0")
    assert cfg["ide2"].startswith(f"{clone_seed.ref},media=cdrom")
    assert "/base-" in cfg["virtio0"] or "base-" in cfg["virtio0"]
    target.start(linked)
    assert target.guest_addresses(linked, timeout=5)
    with pytest.raises(ImgbuildError, match="already exists"):
        target.clone(vm, "clone-a", full=False)
    with pytest.raises(ImgbuildError, match="template"):
        target.start(vm)
    with pytest.raises(ImgbuildError, match="still in use by linked clone"):
        target.destroy(vm)
    for v in (linked, full, vm):
        target.destroy(v)
    target.unstage(clone_seed)
    no_orphans(pve_sim, keep=lambda v: v == image.ref)


def test_no_console_log_and_no_installer_log_on_pve(target: PveTarget) -> None:
    """(Screenshots go through PVE's VNC console: tests/pve/test_console.py.)"""
    vm = VM(name="x", target="sim", ident="100", data={"vmid": 100})
    assert target.console_log(vm) is None
    assert target.installer_log_host(GuestNetwork("dhcp")) is None


def test_status_lists_only_our_vms_with_state_and_last_job(target: PveTarget, pve_sim: PveSimulator,
                                                          staged: tuple[Staged, Staged], tmp_path: Path) -> None:
    import json

    from tests.pve.conftest import SECRET_ENV, cli_env, imgbuild

    image, seed = staged
    web = target.create_vm(make_spec(image, seed))
    gold = target.create_vm(make_spec(image, seed, name="golden", nics=(NicSpec("BC:24:11:00:00:01"),)))
    target.make_template(gold)
    target.client.run("POST", "/nodes/pve/qemu", what="create", wait=10, vmid=300, name="precious", memory="256")
    target.start(web)
    assert [(vm.name, target.is_template(vm)) for vm in target.list_vms()] == [("golden", True),
                                                                              ("web-server", False)]
    out = tmp_path / "out"
    (out / "web-server").mkdir(parents=True)
    (out / "web-server" / "report.json").write_text(json.dumps({
        "target": "sim", "ok": True, "finished": "2026-11-28T07:00:00+00:00", "method": "image",
        "checks": [{"check": "ssh", "ok": True}, {"check": "http", "ok": True}],
        "vm": {"address": "192.168.1.250"}}))
    env = cli_env(tmp_path, IMGBUILD_TARGETS=str(tmp_path / "targets.yaml"), **{SECRET_ENV: pve_sim.token.secret})
    proc = imgbuild("--out-dir", str(out), "status", "--target", "sim", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    rows = {r["name"]: r for r in json.loads(proc.stdout)["vms"]}
    assert set(rows) == {"golden", "web-server"}  # not the VM imgbuild did not make
    assert rows["golden"]["state"] == "template" and rows["golden"]["last_job"] is None
    assert rows["web-server"]["state"] == "running" and rows["web-server"]["id"] == web.ident
    assert rows["web-server"]["address"] == "192.168.1.250"
    assert rows["web-server"]["last_job"]["checks_passed"] == 2
    text = imgbuild("--out-dir", str(out), "status", "--target", "sim", env=env).stdout
    assert "ok 2026-11-28T07:00:00Z (2/2 checks)" in text and "precious" not in text
    for vm in (web, gold):
        target.destroy(vm)
    target.client.run("DELETE", "/nodes/pve/qemu/300", what="cleanup", wait=10)
