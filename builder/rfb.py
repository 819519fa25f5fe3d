"""A small RFB (VNC) client: enough of RFC 6143 to read one complete framebuffer, for screenshots.

The subset: the version handshake (3.3 to 3.8), security types None and VNC Authentication (DES, as RFB does
it: each key byte bit-reversed), ClientInit (shared, so a person's open console stays connected), ServerInit,
SetPixelFormat (32 bits per pixel, little-endian true colour), SetEncodings (Raw, plus the DesktopSize
pseudo-encoding so a resolution change mid-read is followed), one non-incremental FramebufferUpdateRequest,
and the server messages that may arrive meanwhile (colour map, bell, cut text are read and ignored).

The byte stream is anything with ``recv(timeout)`` and ``send(data)``: a WebSocket to Proxmox VE's
``vncwebsocket`` (builder/targets/pve/screen.py) or a plain socket to QEMU's VNC server (the tests).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from cryptography.hazmat.decrepit.ciphers.algorithms import TripleDES
from cryptography.hazmat.primitives.ciphers import Cipher, modes

from builder.errors import ImgbuildError
from builder.png import rgb_png

SEC_INVALID, SEC_NONE, SEC_VNC = 0, 1, 2
ENC_RAW, ENC_DESKTOP_SIZE = 0, -223
# SetPixelFormat: 32 bpp, depth 24, little-endian, true colour, 8 bits per channel; red at bit 16, green 8,
# blue 0: each pixel arrives as the bytes B, G, R, unused.
PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)


class RfbError(ImgbuildError):
    """The VNC server refused us, broke the protocol, or did not send a whole framebuffer in time."""


class Stream(Protocol):
    def recv(self, timeout: float) -> bytes:
        """Some bytes (b"" when the peer closed); raises TimeoutError after *timeout* seconds without any."""

    def send(self, data: bytes) -> None:
        """All of *data*; raises OSError when the peer is gone."""


@dataclass(frozen=True)
class Framebuffer:
    width: int
    height: int
    rgb: bytes  # rows top to bottom, 3 bytes (R, G, B) per pixel
    name: str = ""  # the desktop name from ServerInit

    def png(self) -> bytes:
        return rgb_png(self.width, self.height, self.rgb)


def _reverse_bits(byte: int) -> int:
    return int(f"{byte:08b}"[::-1], 2)


def vnc_auth_response(challenge: bytes, password: str) -> bytes:
    """RFB's VNC Authentication: the 16-byte *challenge* DES-encrypted (ECB) with the password as the key:
    its first 8 bytes, NUL-padded, each byte's bits reversed (the historic quirk of the VNC reference code)."""
    if len(challenge) != 16:
        raise RfbError(f"VNC authentication challenge of {len(challenge)} bytes, not 16")
    key = bytes(_reverse_bits(b) for b in password.encode("latin-1")[:8].ljust(8, b"\0"))
    # DES is TripleDES with three equal keys (cryptography has no single-DES primitive).
    encryptor = Cipher(TripleDES(key * 3), modes.ECB()).encryptor()  # RFB defines ECB
    return encryptor.update(challenge) + encryptor.finalize()


class _Channel:
    """Exact-size reads from a stream under one deadline, and sends that name a vanished server."""

    def __init__(self, stream: Stream, deadline: float, clock: Callable[[], float]) -> None:
        self.stream = stream
        self.deadline = deadline
        self.clock = clock
        self.buf = bytearray()

    def exactly(self, n: int, what: str) -> bytes:
        while len(self.buf) < n:
            left = self.deadline - self.clock()
            if left <= 0:
                raise RfbError(f"the VNC server did not send {what} in time")
            try:
                chunk = self.stream.recv(left)
            except TimeoutError:
                raise RfbError(f"the VNC server did not send {what} in time") from None
            if not chunk:
                raise RfbError(f"the VNC server closed the connection before sending {what}")
            self.buf += chunk
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def u8(self, what: str) -> int:
        return self.exactly(1, what)[0]

    def u32(self, what: str) -> int:
        return int(struct.unpack(">I", self.exactly(4, what))[0])

    def text(self, what: str) -> str:
        length = self.u32(what)
        if length > 1 << 16:
            raise RfbError(f"the VNC server sent {what} of {length} bytes")
        return self.exactly(length, what).decode("utf-8", "replace")

    def send(self, data: bytes) -> None:
        try:
            self.stream.send(data)
        except OSError as exc:
            raise RfbError(f"the VNC server closed the connection ({exc.strerror or exc})") from None


def capture(stream: Stream, password: str | None, *, timeout: float = 60.0,
            clock: Callable[[], float] = time.monotonic) -> Framebuffer:
    """Log in to the VNC server at the other end of *stream* and read one complete framebuffer."""
    rd = _Channel(stream, clock() + timeout, clock)
    minor = _handshake_version(rd)
    _authenticate(rd, password, minor)
    rd.send(b"\x01")  # ClientInit: shared
    width, height = struct.unpack(">HH", rd.exactly(4, "ServerInit"))
    rd.exactly(16, "ServerInit")  # the server's pixel format: replaced by ours below
    name = rd.text("the desktop name")
    rd.send(b"\x00\x00\x00\x00" + PIXEL_FORMAT)  # SetPixelFormat (3 bytes padding)
    encodings = (ENC_RAW, ENC_DESKTOP_SIZE)
    rd.send(struct.pack(f">BxH{len(encodings)}i", 2, len(encodings), *encodings))  # SetEncodings
    return _read_framebuffer(rd, width, height, name)


def _handshake_version(rd: _Channel) -> int:
    banner = rd.exactly(12, "its protocol version")
    if not (banner.startswith(b"RFB ") and banner[7:8] == b"." and banner.endswith(b"\n")):
        raise RfbError(f"not a VNC server: it greeted with {banner!r}")
    major, minor = int(banner[4:7]), int(banner[8:11])
    if major < 3 or (major == 3 and minor < 3):
        raise RfbError(f"the VNC server speaks RFB {major}.{minor}; 3.3 or later is needed")
    minor = 8 if (major, minor) >= (3, 8) else (7 if minor >= 7 else 3)
    rd.send(f"RFB 003.00{minor}\n".encode())
    return minor


def _authenticate(rd: _Channel, password: str | None, minor: int) -> None:
    if minor == 3:
        chosen = rd.u32("its security type")
        if chosen == SEC_INVALID:
            raise RfbError(f"the VNC server refused the connection: {rd.text('the reason')}")
    else:
        count = rd.u8("its security types")
        if count == 0:
            raise RfbError(f"the VNC server refused the connection: {rd.text('the reason')}")
        offered = set(rd.exactly(count, "its security types"))
        if SEC_NONE in offered and password is None:
            chosen = SEC_NONE
        elif SEC_VNC in offered:
            chosen = SEC_VNC
        elif SEC_NONE in offered:
            chosen = SEC_NONE
        else:
            raise RfbError(f"the VNC server offers only security types {sorted(offered)}; "
                           "imgbuild speaks None (1) and VNC Authentication (2)")
        rd.send(bytes([chosen]))
    if chosen == SEC_VNC:
        if password is None:
            raise RfbError("the VNC server wants a password and none was given")
        rd.send(vnc_auth_response(rd.exactly(16, "the authentication challenge"), password))
    elif chosen != SEC_NONE:
        raise RfbError(f"the VNC server chose security type {chosen}; imgbuild speaks None and VNC Authentication")
    # SecurityResult: always after VNC Authentication; after None only from 3.8 on
    if (chosen == SEC_VNC or minor == 8) and rd.u32("the authentication result") != 0:
        reason = rd.text("the reason") if minor == 8 else "no reason given"
        raise RfbError(f"the VNC server refused the password: {reason}")


def _read_framebuffer(rd: _Channel, width: int, height: int, name: str) -> Framebuffer:
    def request() -> None:
        rd.send(struct.pack(">BBHHHH", 3, 0, 0, 0, width, height))  # FramebufferUpdateRequest, full

    fb = bytearray(width * height * 4)
    seen = bytearray(width * height)  # 1 where a rectangle has covered the pixel
    request()
    while True:
        kind = rd.u8("a server message")
        if kind == 0:  # FramebufferUpdate
            (count,) = struct.unpack(">xH", rd.exactly(3, "a framebuffer update"))
            for _ in range(count):
                x, y, w, h, encoding = struct.unpack(">HHHHi", rd.exactly(12, "a rectangle header"))
                if encoding == ENC_DESKTOP_SIZE:  # the screen changed size: start over at the new size
                    width, height = w, h
                    fb, seen = bytearray(width * height * 4), bytearray(width * height)
                    request()
                    continue
                if encoding != ENC_RAW:
                    raise RfbError(f"the VNC server sent encoding {encoding}, which was not asked for")
                if x + w > width or y + h > height:
                    raise RfbError(f"the VNC server sent a {w}x{h} rectangle at {x},{y} outside its "
                                   f"{width}x{height} screen")
                data = rd.exactly(w * h * 4, "rectangle pixels")
                for row in range(h):
                    at = (y + row) * width + x
                    fb[at * 4 : (at + w) * 4] = data[row * w * 4 : (row + 1) * w * 4]
                    seen[at : at + w] = b"\x01" * w
            if width and height and seen.find(0) < 0:
                break
        elif kind == 1:  # SetColourMapEntries (unused with true colour)
            _, count = struct.unpack(">xHH", rd.exactly(5, "a colour map"))
            rd.exactly(count * 6, "colour map entries")
        elif kind == 2:  # Bell
            continue
        elif kind == 3:  # ServerCutText
            rd.exactly(3, "cut text")
            rd.text("cut text")
        else:
            raise RfbError(f"the VNC server sent message type {kind}, which RFB 3.8 does not define")
    rgb = bytearray(width * height * 3)
    rgb[0::3], rgb[1::3], rgb[2::3] = fb[2::4], fb[1::4], fb[0::4]
    return Framebuffer(width, height, bytes(rgb), name)
