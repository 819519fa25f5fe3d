"""Boot the golden web-server image on the local target with a static address from a NoCloud seed,
and prove what the pipeline relies on: TCG picked automatically, the agent's address report, SSH with a
pinned host key and HTTP through loopback forwards, a PNG screenshot, media changes, reattaching from
the state file, a clean ACPI shutdown, and that destroy leaves no process behind.

One VM is shared by the module's tests (they run in file order)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.image import GoldenImage
from builder.targets.base import VM, DiskSpec, GuestNetwork, NicSpec, Staged, VMSpec
from builder.targets.local import LocalTarget, choose_accel
from builder.targets.local.qmp import QMPClient
from builder.targets.local.state import process_alive
from tests.local.guest import KeyPair, http_get, png_pixels, ssh_run, static_network, user_data, write_seed

pytestmark = pytest.mark.boot

ADDRESS = "192.168.1.250"
MAC = "52:54:00:a1:b2:c3"


@dataclass
class Booted:
    target: LocalTarget
    vm: VM
    seed: Staged
    host_key: KeyPair
    user_key: KeyPair


@pytest.fixture(scope="module")
def booted(local_target: LocalTarget, web_image: GoldenImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    host_key, user_key = KeyPair.generate(), KeyPair.generate()
    seed_path = write_seed(
        tmp_path_factory.mktemp("seed") / "seed.iso",
        instance_id="web-static-1",
        hostname="web1",
        user=user_data("web1", user_key, host_key),
        network=static_network(MAC, f"{ADDRESS}/24", "192.168.1.1", "192.168.1.3"),
    )
    target = local_target
    image = target.stage(web_image.path, "image", label="web-server")
    seed = target.stage(seed_path, "iso", label="web-seed")
    spec = VMSpec(
        name="web",
        cores=2,
        memory_mib=2048,
        cpu="kvm64",
        display="std",
        bios="seabios",
        disks=(DiskSpec(8 * 1024**3, source=image),),
        cdroms=(seed,),
        nics=(NicSpec(MAC),),
        network=GuestNetwork("static", f"{ADDRESS}/24", "192.168.1.1", ("192.168.1.3",)),
        guest_ports=(22, 80),
    )
    vm = target.create_vm(spec)
    try:
        target.start(vm)
        yield Booted(target, vm, seed, host_key, user_key)
    finally:
        target.destroy(vm)


def test_auto_acceleration_picks_tcg_here(booted: Booted) -> None:
    verdict = choose_accel("auto", use_cache=False)  # a fresh probe, not the cached verdict
    assert verdict.accel == "tcg", verdict
    assert booted.vm.data["accel"] == "tcg"


def test_guest_agent_reports_static_address(booted: Booted) -> None:
    addresses = booted.target.guest_addresses(booted.vm, timeout=300)
    assert ADDRESS in addresses, addresses


def test_ssh_answers_on_loopback_forward_with_pinned_host_key(booted: Booted) -> None:
    ep = booted.target.endpoint(booted.vm, ADDRESS, 22)
    assert ep.host == "127.0.0.1"
    out = ssh_run(ep.port, booted.host_key, booted.user_key, "hostname; cat /etc/machine-id; systemctl is-active ssh qemu-guest-agent", timeout=300)
    lines = out.split()
    assert lines[0] == "web1"
    assert len(lines[1]) == 32  # a machine-id of its own, generated on first boot
    assert lines[2:] == ["active", "active"]


def test_ssh_rejects_an_unknown_host_key(booted: Booted) -> None:
    ep = booted.target.endpoint(booted.vm, ADDRESS, 22)
    with pytest.raises(Exception, match="(?i)host key|not found in known_hosts|BadHostKey"):
        ssh_run(ep.port, KeyPair.generate(), booted.user_key, "true", timeout=30)


def test_http_default_page_on_loopback_forward(booted: Booted) -> None:
    ep = booted.target.endpoint(booted.vm, ADDRESS, 80)
    body = http_get(ep.port, timeout=120, expect="Apache2 Debian Default Page")
    assert "It works" in body


def test_forwards_bind_loopback_only(booted: Booted) -> None:
    argv = (Path(booted.vm.ident) / "qemu.argv").read_text()
    assert "hostfwd=tcp:127.0.0.1:" in argv
    assert "hostfwd=tcp::" not in argv and "hostfwd=tcp:0.0.0.0" not in argv
    assert "cache=none" in argv and "virtio-blk-pci" in argv and f"mac={MAC}" in argv


def test_screendump_is_a_non_blank_png(booted: Booted, tmp_path: Path) -> None:
    shot = booted.target.screenshot(booted.vm, tmp_path / "screen.png")
    width, height, colours = png_pixels(shot.read_bytes())
    assert width >= 640 and height >= 400
    assert len(colours) > 1, "screenshot is a single colour"


def test_cdrom_eject_and_insert(booted: Booted) -> None:
    target, vm = booted.target, booted.vm
    target.set_cdrom(vm, 0, None)
    assert _cdrom_file(vm) is None
    target.set_cdrom(vm, 0, booted.seed)
    assert _cdrom_file(vm) == booted.seed.ref


def test_reattach_from_state_file(booted: Booted) -> None:
    again = LocalTarget(booted.target.out_root)
    vm = again.find_vm("web")
    assert vm is not None and again.is_running(vm)
    assert again.endpoint(vm, ADDRESS, 22) == booted.target.endpoint(booted.vm, ADDRESS, 22)
    assert again.console_log(vm) == booted.target.out_root / "web" / "console.log"


def test_clean_shutdown_then_destroy_leaves_no_process(booted: Booted) -> None:
    target, vm = booted.target, booted.vm
    pid = vm.data["pid"]
    qmp_sock = str(Path(vm.data["sockdir"]) / "qmp.sock")
    target.shutdown(vm, timeout=180)
    assert not target.is_running(vm)
    console = target.console_log(vm).read_text(errors="replace")
    assert "reboot: Power down" in console, "the guest did not power off cleanly (ACPI)"
    target.destroy(vm)
    assert not process_alive(pid, qmp_sock)
    assert not Path(vm.ident).exists()
    assert target.find_vm("web") is None


def _cdrom_file(vm: VM) -> str | None:
    with QMPClient(Path(vm.data["sockdir"]) / "qmp.sock").connect() as qmp:
        for dev in qmp.execute("query-block"):
            if dev.get("qdev", "").endswith("cdrom0") or dev.get("device") == "drive-cd0":
                inserted = dev.get("inserted")
                return inserted["file"] if inserted else None
    raise AssertionError("no cdrom0 in query-block")
