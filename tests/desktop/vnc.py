"""A real VNC server for the RFB client's tests: QEMU with firmware only (no disk, no OS), its display on VNC.

SeaBIOS finds nothing to boot and says so on the VGA text screen, then waits a minute before trying again:
a real, non-blank framebuffer that stays still, from QEMU's own VNC server, in about a second. QMP is there
to set the VNC password (as Proxmox VE's ``qm vncproxy`` does) and to take QEMU's own screendump to compare.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from builder.targets.local.qmp import QMPClient


class SocketStream:
    """An RFB byte stream over a plain socket (the RFB client's ``Stream``)."""

    def __init__(self, sock: socket.socket) -> None:
        self.sock = sock

    def recv(self, timeout: float) -> bytes:
        self.sock.settimeout(timeout)
        return self.sock.recv(1 << 16)

    def send(self, data: bytes) -> None:
        self.sock.sendall(data)


class FirmwareVnc:
    """``qemu-system-x86_64`` without a disk, ``-vnc unix:DIR/vnc.sock`` (with ``password=on`` when asked)."""

    def __init__(self, workdir: Path, *, password: bool = True, vga: str = "std", paused: bool = False) -> None:
        self.dir = workdir
        self.vnc_socket = workdir / "vnc.sock"
        self.qmp_socket = workdir / "qmp.sock"
        self.pidfile = workdir / "qemu.pid"
        vnc = f"unix:{self.vnc_socket}" + (",password=on" if password else "")
        subprocess.run([
            "qemu-system-x86_64", "-nodefaults", "-no-user-config", "-machine", "q35", "-accel", "tcg",
            "-m", "64", "-vga", vga, "-display", "none", "-vnc", vnc,
            "-qmp", f"unix:{self.qmp_socket},server=on,wait=off", "-daemonize", "-pidfile", str(self.pidfile),
            *(["-S"] if paused else []),
        ], check=True, timeout=60)  # fmt: skip
        self.pid = int(self.pidfile.read_text())

    def qmp(self) -> QMPClient:
        return QMPClient(self.qmp_socket).connect(wait=5)

    def set_password(self, password: str) -> None:
        with self.qmp() as qmp:
            qmp.execute("set_password", {"protocol": "vnc", "password": password})

    def connect(self) -> SocketStream:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(str(self.vnc_socket))
        return SocketStream(sock)

    def screendump(self, dest: Path) -> bytes:
        with self.qmp() as qmp:
            qmp.execute("screendump", {"filename": str(dest), "format": "png"}, timeout=30)
        return dest.read_bytes()

    def wait_for_text(self, dest: Path, timeout: float = 120.0) -> None:
        """Until the firmware has its text screen up (VGA text mode, 720x400) and has written on it. (Before,
        QEMU shows its own 640x480 notice that the guest has not initialised the display yet.)"""
        from builder.verify.pngcheck import inspect_png

        deadline = time.monotonic() + timeout
        while (info := inspect_png(self.screendump(dest))).colours < 2 or (info.width, info.height) != (720, 400):
            if time.monotonic() > deadline:
                raise TimeoutError("the firmware never wrote to the screen")
            time.sleep(0.2)

    def stop(self) -> None:
        try:
            os.kill(self.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                os.kill(self.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.05)
        os.kill(self.pid, signal.SIGKILL)
