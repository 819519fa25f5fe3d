"""The other shipped scenarios on the local target: DHCP and the NAT'd LXDE desktop."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys

import pytest

from builder.targets.local import LocalTarget
from builder.verify.pngcheck import inspect_png
from builder.verify.ssh import GuestShell
from tests.desktop.greeter import differing_fraction, greeter_screen
from tests.pipeline.conftest import check_named

pytestmark = pytest.mark.boot


def test_ssh_server_over_dhcp_with_a_german_keyboard(imgbuild) -> None:
    """The shipped ssh-server recipe with `keyboard: de` (no other test boots this image, so the keyboard
    costs no extra build): the image method honours it on the console and for X."""
    recipe = imgbuild.recipes / "ssh-server.yaml"
    recipe.write_text(recipe.read_text() + "keyboard: de\n")
    result = imgbuild("make", "ssh-server", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("ssh-server")
    assert report["ok"] and report["vm"]["address"] == "10.0.2.15"  # slirp's first DHCP lease
    ssh = check_named(report, "ssh")
    assert ssh["ok"] and "10.0.2.15/24" in ssh["seen"]
    assert check_named(report, "service ssh")["ok"]
    cmd = [*shlex.split(report["access"]["ssh"]), "-o", "BatchMode=yes",
           "grep ^XKBLAYOUT= /etc/default/keyboard; localectl status | grep 'X11 Layout';"
           " sudo dumpkeys -C /dev/tty1 | grep -E '^keycode +21 '"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=imgbuild.root)
    assert proc.returncode == 0, proc.stderr
    layout, x11, keycode = proc.stdout.splitlines()
    assert layout == 'XKBLAYOUT="de"' and x11.split() == ["X11", "Layout:", "de"]
    # The console's keymap is loaded: the key right of T (keycode 21) types z on a German keyboard, y on a US one.
    assert keycode.split("=")[1].split()[0] in ("+z", "z"), keycode


def test_lxde_desktop_logs_admin_in_and_shows_the_session(imgbuild, tmp_path) -> None:
    """One boot. make verifies lightdm and admin's LXDE session (logind: an active x11 session on seat0,
    lxpanel running, no greeter) with a settled screenshot. Then, on the kept VM, ending that session brings
    lightdm's greeter back (autologin happens once per boot): its screen differs from the session's."""
    result = imgbuild("make", "lxde-desktop", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("lxde-desktop")
    assert report["ok"] and report["vm"]["address"] == "10.10.10.20"
    assert check_named(report, "service lightdm")["ok"]
    desktop = check_named(report, "desktop")
    assert desktop["ok"], desktop
    assert "admin user x11 on seat0 active" in desktop["seen"] and "lxpanel running (pid" in desktop["seen"]
    assert "greeter" not in desktop["seen"]
    session = (imgbuild.out / "lxde-desktop" / "screenshot.png").read_bytes()
    info = inspect_png(session)
    assert not info.blank and info.width >= 640 and info.height >= 480

    out = imgbuild.out / "lxde-desktop"
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("lxde-desktop")
    assert vm is not None
    with GuestShell(target.endpoint(vm, "10.10.10.20", 22), "admin", out / "known_hosts", out / "id_ed25519") as shell:
        shell.connect(120)
        # the session never blanks or locks (light-locker locks when the X screen saver starts)
        xset = shell.run("DISPLAY=:0 xset q").stdout
        assert re.search(r"timeout:\s+0\b", xset), xset
        assert "DPMS is Disabled" in xset or "Server does not have the DPMS Extension" in xset, xset
        greeter, seen = greeter_screen(shell, lambda: target.screenshot(vm, tmp_path / "greeter.png").read_bytes())
    share = differing_fraction(session, greeter)
    sys.stderr.write(f"greeter: {seen}; {share:.1%} of the pixels differ from the session's screen\n")
    assert share > 0.05, f"the session's screenshot is (nearly) the greeter's: {share:.1%} of pixels differ"
