"""Write PNG files (8-bit RGB, no filter): screenshots from QEMU's PPM screendump and from a VNC framebuffer."""

from __future__ import annotations

import struct
import zlib

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def is_png(data: bytes) -> bool:
    return data.startswith(PNG_MAGIC) and b"IEND" in data[-16:]


def _chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload) & 0xFFFFFFFF)


def rgb_png(width: int, height: int, raster: bytes) -> bytes:
    """A PNG of *raster*: *height* rows of *width* RGB pixels, 3 bytes each, top row first."""
    stride = width * 3
    if len(raster) != stride * height:
        raise ValueError(f"an RGB raster of {width}x{height} has {stride * height} bytes, not {len(raster)}")
    rows = b"".join(b"\x00" + raster[y * stride : (y + 1) * stride] for y in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return PNG_MAGIC + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(rows, 6)) + _chunk(b"IEND", b"")
