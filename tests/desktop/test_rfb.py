"""The RFB client against a real VNC server: QEMU's, with firmware only (about a second of CPU, no guest OS).

What it reads must be QEMU's own framebuffer, pixel for pixel (its screendump of the same still screen),
through VNC Authentication with the password set over QMP, as Proxmox VE's ``qm vncproxy`` sets it.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from builder.rfb import Framebuffer, RfbError, capture, vnc_auth_response
from builder.verify.pngcheck import decode_png, inspect_png
from tests.desktop.vnc import FirmwareVnc, SocketStream


@pytest.fixture(scope="module")
def vnc(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FirmwareVnc]:
    server = FirmwareVnc(tmp_path_factory.mktemp("vnc"))
    try:
        server.set_password("s3cret!x")
        server.wait_for_text(server.dir / "wait.png")
        yield server
    finally:
        server.stop()


def same_pixels(fb: Framebuffer, png: bytes) -> bool:
    raster = decode_png(png)
    assert raster.channels == 3
    return (raster.width, raster.height) == (fb.width, fb.height) and raster.pixels == fb.rgb


def test_des_as_rfb_uses_it_matches_the_des_known_answer() -> None:
    # FIPS 46 worked example: key 133457799BBCDFF1, plaintext 0123456789ABCDEF -> 85E813540F0AB405.
    # RFB reverses the bits of each key byte, so the password is the key with its bytes' bits reversed.
    key = bytes.fromhex("133457799BBCDFF1")
    password = bytes(int(f"{b:08b}"[::-1], 2) for b in key).decode("latin-1")
    challenge = bytes.fromhex("0123456789ABCDEF") * 2
    assert vnc_auth_response(challenge, password) == bytes.fromhex("85E813540F0AB405") * 2
    # only the first 8 bytes of a password count; shorter ones are NUL-padded
    assert vnc_auth_response(challenge, password + "tail") == vnc_auth_response(challenge, password)
    assert vnc_auth_response(challenge, "ab") == vnc_auth_response(challenge, "ab\0\0\0\0\0\0")


def test_a_full_framebuffer_is_qemus_own_screen(vnc: FirmwareVnc, tmp_path: Path) -> None:
    for _ in range(3):  # the firmware may write between the two reads: then the next pair agrees
        stream = vnc.connect()
        try:
            fb = capture(stream, "s3cret!x", timeout=30)
        finally:
            stream.sock.close()
        if same_pixels(fb, vnc.screendump(tmp_path / "dump.png")):
            break
    else:
        pytest.fail("three VNC reads differed from QEMU's screendump taken right after each")
    assert (fb.width, fb.height) == (720, 400)  # VGA text mode, 80x25 characters of 9x16
    png = fb.png()
    assert inspect_png(png).colours > 1 and decode_png(png).pixels == fb.rgb


class HeldRequest:
    """The real stream, except that the first FramebufferUpdateRequest waits until *before_request* ran."""

    def __init__(self, stream: SocketStream, before_request: Callable[[], None]) -> None:
        self.stream, self.before_request, self.held = stream, before_request, False

    def recv(self, timeout: float) -> bytes:
        return self.stream.recv(timeout)

    def send(self, data: bytes) -> None:
        if data[:1] == b"\x03" and not self.held:
            self.held = True
            self.before_request()
        self.stream.send(data)


def test_a_resolution_change_during_the_read_is_followed(tmp_path: Path) -> None:
    """The VM starts paused: QEMU's 640x480 notice. Between SetEncodings (DesktopSize announced) and the
    update request the firmware switches to its 720x400 text screen: the client starts over at that size."""
    server = FirmwareVnc(tmp_path, password=False, paused=True)
    try:
        assert decode_png(server.screendump(tmp_path / "paused.png")).width == 640

        def run_firmware() -> None:
            with server.qmp() as qmp:
                qmp.execute("cont")
            server.wait_for_text(tmp_path / "wait.png")

        stream = server.connect()
        try:
            fb = capture(HeldRequest(stream, run_firmware), None, timeout=300)  # the firmware runs inside it
        finally:
            stream.sock.close()
        assert (fb.width, fb.height) == (720, 400)
        assert same_pixels(fb, server.screendump(tmp_path / "dump.png"))
    finally:
        server.stop()


def test_a_wrong_password_is_refused_with_the_servers_reason(vnc: FirmwareVnc) -> None:
    stream = vnc.connect()
    try:
        with pytest.raises(RfbError, match="refused the password: Authentication failed"):
            capture(stream, "wrong", timeout=30)
    finally:
        stream.sock.close()


def test_no_password_for_a_server_that_wants_one(vnc: FirmwareVnc) -> None:
    stream = vnc.connect()
    try:
        with pytest.raises(RfbError, match="wants a password and none was given"):
            capture(stream, None, timeout=30)
    finally:
        stream.sock.close()


def test_a_server_without_a_password(tmp_path: Path) -> None:
    server = FirmwareVnc(tmp_path, password=False)
    try:
        server.wait_for_text(tmp_path / "wait.png")
        stream = server.connect()
        try:
            fb = capture(stream, None, timeout=30)
        finally:
            stream.sock.close()
        assert (fb.width, fb.height) == (720, 400) and inspect_png(fb.png()).colours > 1
    finally:
        server.stop()


def test_not_a_vnc_server(vnc: FirmwareVnc) -> None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(str(vnc.qmp_socket))  # QEMU's QMP: greets with JSON
    try:
        with pytest.raises(RfbError, match=r"not a VNC server: it greeted with b'\{"):
            capture(SocketStream(sock), "x", timeout=10)
    finally:
        sock.close()


def test_a_silent_peer_times_out() -> None:
    ours, theirs = socket.socketpair()
    try:
        with pytest.raises(RfbError, match="did not send its protocol version in time"):
            capture(SocketStream(ours), "x", timeout=0.5)
    finally:
        ours.close()
        theirs.close()


def test_a_peer_that_hangs_up() -> None:
    ours, theirs = socket.socketpair()
    theirs.sendall(b"RFB 003.008\n")
    theirs.close()
    try:
        with pytest.raises(RfbError, match="the VNC server closed the connection"):
            capture(SocketStream(ours), "x", timeout=5)
    finally:
        ours.close()
