"""For the lxde-desktop boot tests on both targets: the screen of the greeter, to compare with the session's.

With ``desktop.autologin`` lightdm never shows its greeter at boot. Ending the autologin session brings it
back (lightdm logs in automatically once per boot), so on the same guest, after ``make`` verified the
session, the tests end it over SSH, wait for logind to report a greeter session, and take the greeter's
screen with the target's own screenshot call (QMP screendump locally, the VNC console on Proxmox VE).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from builder.recipe.tasks import SESSIONS
from builder.verify.desktop import probe_command, session_state
from builder.verify.pngcheck import decode_png, inspect_png
from builder.verify.ssh import GuestShell

LXDE = SESSIONS["lxde-desktop"]


def settled(shoot: Callable[[], bytes], timeout: float = 300.0) -> bytes:
    """A screenshot that is not blank and the same as the one taken 3 s before it."""
    deadline, previous = time.monotonic() + timeout, b""
    while True:
        data = shoot()
        if data == previous and not inspect_png(data).blank:
            return data
        assert time.monotonic() < deadline, "the screen never settled on a non-blank picture"
        previous = data
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
    ra, rb = decode_png(a), decode_png(b)
    if (ra.width, ra.height, ra.channels) != (rb.width, rb.height, rb.channels):
        return 1.0
    step, n = ra.channels, ra.width * ra.height
    pa, pb = ra.pixels, rb.pixels
    differ = sum(1 for i in range(0, n * step, step) if pa[i : i + step] != pb[i : i + step])
    return differ / n


def save(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path
