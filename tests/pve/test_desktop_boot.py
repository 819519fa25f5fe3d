"""`imgbuild make lxde-desktop --target sim` for real: an LXDE desktop verified on the Proxmox VE target, its
screen read through PVE's VNC console (vncproxy, vncwebsocket, RFB). One boot, shared by this module.

The simulator runs the VM in QEMU with a VNC display as qemu-server does; the checks reach the guest
(10.10.10.20 behind the NAT bridge vmbr1) through the SSH jump host (tests/pve/simboot.py).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.targets.local.qmp import QMPClient
from builder.targets.pve.connect import open_pve_target
from builder.targets.pve.target import PveTarget
from builder.verify.pngcheck import changed_share, decode_png, inspect_png
from builder.verify.ssh import GuestShell
from tests.desktop.greeter import differing_fraction, greeter_screen
from tests.pve.simboot import made_on_sim

pytestmark = pytest.mark.boot

ADDRESS = "10.10.10.20"


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    tmp = tmp_path_factory.mktemp("pvedesktop")
    # vmbr1 as the networking chapter sets it up on the node: the NAT bridge 10.10.10.1/24 (checked by make)
    with made_on_sim(tmp, "lxde-desktop", "--keep", bridges={"vmbr0": None, "vmbr1": "10.10.10.1/24"},
                     guest_ports=(22,), timeout=2700) as made:
        target = open_pve_target("sim", made.out, environ=made.env)
        try:
            yield {"sim": made.sim, "proc": made.proc, "out": made.out, "env": made.env, "target": target}
        finally:
            target.close()


def test_lxde_desktop_is_verified_on_pve_with_a_console_screenshot(booted: dict) -> None:
    proc, sim = booted["proc"], booted["sim"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "lxde-desktop: verified on sim" in proc.stdout
    report = json.loads((booted["out"] / "lxde-desktop" / "report.json").read_text())
    assert report["ok"] and report["vm"]["address"] == ADDRESS
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["service lightdm"]["ok"]
    desktop = checks["desktop"]
    assert desktop["ok"], desktop
    assert "admin user x11 on seat0 active" in desktop["seen"] and "lxpanel running (pid" in desktop["seen"]
    info = inspect_png((booted["out"] / "lxde-desktop" / "screenshot.png").read_bytes())
    assert not info.blank and info.width >= 640 and info.height >= 480
    # the screen came through PVE's console API, with the token, and nothing else
    proxies = sim.requests_matching("POST", "/vncproxy$")
    sockets = sim.requests_matching("GET", "/vncwebsocket$")
    assert proxies and len(sockets) == len(proxies) and {r.status for r in sockets} == {101}
    assert {r.user for r in sockets} == {sim.token.full_id}
    assert sim.token.secret not in proc.stdout + proc.stderr


def test_the_console_shows_the_guests_own_screen(booted: dict, tmp_path: Path) -> None:
    """The console's picture is QEMU's own screen: identical, but for what changed between the two reads
    (LXDE's panel redraws a CPU graph every second: at most a few hundred pixels)."""
    target: PveTarget = booted["target"]
    vm = target.find_vm("lxde-desktop")
    assert vm is not None and target.is_running(vm)
    qmp_socket = booted["sim"].backend.workdir / vm.ident / "qmp.sock"
    shares = []
    for _ in range(5):
        ours = decode_png(target.screenshot(vm, tmp_path / "console.png").read_bytes())
        with QMPClient(qmp_socket).connect(wait=5) as qmp:
            qmp.execute("screendump", {"filename": str(tmp_path / "dump.png"), "format": "png"}, timeout=30)
        shares.append(changed_share(ours, decode_png((tmp_path / "dump.png").read_bytes())))
        if shares[-1] < 0.002:
            break
    sys.stderr.write(f"console vs screendump: {', '.join(f'{s:.3%}' for s in shares)} of the pixels differ\n")
    assert shares[-1] < 0.002, shares


def test_the_session_is_not_the_greeter(booted: dict, tmp_path: Path) -> None:
    """Last: it ends admin's session. The greeter it brings back, read through the console too, differs."""
    target: PveTarget = booted["target"]
    out = booted["out"] / "lxde-desktop"
    vm = target.find_vm("lxde-desktop")
    assert vm is not None
    session = (out / "screenshot.png").read_bytes()
    with GuestShell(target.endpoint(vm, ADDRESS, 22), "admin", out / "known_hosts", out / "id_ed25519") as shell:
        shell.connect(120)
        greeter, seen = greeter_screen(shell, lambda: target.screenshot(vm, tmp_path / "greeter.png").read_bytes())
    share = differing_fraction(session, greeter)
    sys.stderr.write(f"greeter: {seen}; {share:.1%} of the pixels differ from the session's screen\n")
    assert share > 0.05, f"the session's screenshot is (nearly) the greeter's: {share:.1%} of pixels differ"
