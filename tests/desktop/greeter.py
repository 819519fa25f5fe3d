"""For the lxde-desktop boot tests on both targets: the screen of the greeter, to compare with the session's.

With ``desktop.autologin`` lightdm never shows its greeter at boot. Ending the autologin session brings it
back (lightdm logs in automatically once per boot), so on the same guest, after ``make`` verified the
session, the tests end it over SSH, wait for logind to report a greeter session, and take the greeter's
screen with the target's own screenshot call (QMP screendump locally, the VNC console on Proxmox VE).
"""

from __future__ import annotations

import time
from collections.abc import Callable

from builder.recipe.tasks import SESSIONS
from builder.verify.checks import SETTLED_CHANGE
from builder.verify.desktop import probe_command, session_state
from builder.verify.pngcheck import changed_share, decode_png, inspect_png
from builder.verify.ssh import GuestShell

LXDE = SESSIONS["lxde-desktop"]


def settled(shoot: Callable[[], bytes], timeout: float = 300.0) -> bytes:
    """A screenshot that is not blank and nearly the same as the one taken 3 s before it (the desktop check's
    own criterion: a clock may tick)."""
    deadline, previous = time.monotonic() + timeout, None
    while True:
        data = shoot()
        raster = decode_png(data)
        if previous is not None and changed_share(previous, raster) < SETTLED_CHANGE and not inspect_png(data).blank:
            return data
        assert time.monotonic() < deadline, "the screen never settled on a non-blank picture"
        previous = raster
        time.sleep(3)


def greeter_screen(shell: GuestShell, shoot: Callable[[], bytes], timeout: float = 600.0) -> tuple[bytes, str]:
    """End admin's session on seat0, wait for lightdm's greeter session, and return its settled screen and what
    logind reported."""
    shell.run("sudo loginctl terminate-seat seat0")
    deadline = time.monotonic() + timeout
    while True:
        out = shell.run(probe_command("admin", LXDE)).stdout
        state = session_state(out, "admin", LXDE)
        if "lightdm greeter x11 on seat0 active" in state.seen and "lxpanel not running" in state.seen:
            break
        assert time.monotonic() < deadline, f"no greeter after the session ended: {state.seen}"
        time.sleep(3)
    return settled(shoot, timeout=max(60.0, deadline - time.monotonic())), state.seen


def differing_fraction(a: bytes, b: bytes) -> float:
    """The share of pixels that differ between two PNGs (1.0 when their sizes differ)."""
    return changed_share(decode_png(a), decode_png(b))
