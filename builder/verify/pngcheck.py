"""Decode enough of a PNG to say whether it is a real, non-blank picture (for the desktop check)."""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass

MAGIC = b"\x89PNG\r\n\x1a\n"
CHANNELS = {0: 1, 2: 3, 4: 2, 6: 4}


@dataclass(frozen=True)
class PngInfo:
    width: int
    height: int
    colours: int  # distinct pixel values (capped at 4096)

    @property
    def blank(self) -> bool:
        return self.colours < 2


@dataclass(frozen=True)
class Raster:
    width: int
    height: int
    channels: int  # bytes per pixel: 1 grey, 2 grey+alpha, 3 RGB, 4 RGBA
    pixels: bytes  # rows top to bottom, unfiltered


def inspect_png(data: bytes) -> PngInfo:
    """Parse and fully decode an 8-bit, non-interlaced PNG. Raises ValueError if it is not a valid one."""
    return inspect_raster(decode_png(data))


def inspect_raster(raster: Raster) -> PngInfo:
    bpp, colours = raster.channels, set[bytes]()
    stride = raster.width * bpp
    for y in range(raster.height):
        if len(colours) >= 4096:
            break
        line = raster.pixels[y * stride : (y + 1) * stride]
        for x in range(0, stride, bpp * 7):  # sample every 7th pixel: plenty to tell blank from not
            colours.add(line[x : x + bpp])
    return PngInfo(width=raster.width, height=raster.height, colours=len(colours))


def changed_share(a: Raster, b: Raster) -> float:
    """The share of pixels that differ between two pictures (1.0 when their sizes differ)."""
    if (a.width, a.height, a.channels) != (b.width, b.height, b.channels):
        return 1.0
    if a.pixels == b.pixels:
        return 0.0
    n, step, pa, pb = a.width * a.height, a.channels, a.pixels, b.pixels
    stride = a.width * step
    changed = 0
    for y in range(a.height):  # whole rows compare at C speed; only rows that differ are walked
        row = slice(y * stride, (y + 1) * stride)
        if pa[row] != pb[row]:
            ra, rb = pa[row], pb[row]
            changed += sum(1 for x in range(0, stride, step) if ra[x : x + step] != rb[x : x + step])
    return changed / n


def decode_png(data: bytes) -> Raster:
    """The pixels of an 8-bit, non-interlaced PNG. Raises ValueError if it is not a valid one."""
    if not data.startswith(MAGIC):
        raise ValueError("not a PNG (bad signature)")
    pos, idat, header = 8, bytearray(), None
    while pos < len(data):
        if pos + 8 > len(data):
            raise ValueError("truncated PNG chunk header")
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        payload = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
        if len(payload) != length or len(crc) != 4 or struct.unpack(">I", crc)[0] != zlib.crc32(kind + payload) & 0xFFFFFFFF:
            raise ValueError(f"corrupt PNG chunk {kind!r}")
        if kind == b"IHDR":
            header = struct.unpack(">IIBBBBB", payload)
        elif kind == b"IDAT":
            idat += payload
        elif kind == b"IEND":
            break
        pos += 12 + length
    else:
        raise ValueError("PNG has no IEND chunk")
    if header is None:
        raise ValueError("PNG has no IHDR chunk")
    width, height, depth, colour, _, _, interlace = header
    if depth != 8 or colour not in CHANNELS or interlace:
        raise ValueError(f"unsupported PNG layout (depth {depth}, colour type {colour}, interlace {interlace})")
    bpp = CHANNELS[colour]
    stride = width * bpp
    raw = zlib.decompress(bytes(idat))
    if len(raw) != height * (stride + 1):
        raise ValueError("PNG image data has the wrong size")
    prev = bytearray(stride)
    out = bytearray()
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        _unfilter(ftype, line, prev, bpp)
        out += line
        prev = line
    return Raster(width, height, bpp, bytes(out))


def _unfilter(ftype: int, line: bytearray, prev: bytearray, bpp: int) -> None:
    if ftype == 0:
        return
    for i in range(len(line)):
        left = line[i - bpp] if i >= bpp else 0
        up = prev[i]
        if ftype == 1:
            line[i] = (line[i] + left) & 0xFF
        elif ftype == 2:
            line[i] = (line[i] + up) & 0xFF
        elif ftype == 3:
            line[i] = (line[i] + ((left + up) >> 1)) & 0xFF
        elif ftype == 4:
            ul = prev[i - bpp] if i >= bpp else 0
            p = left + up - ul
            pa, pb, pc = abs(p - left), abs(p - up), abs(p - ul)
            pred = left if pa <= pb and pa <= pc else (up if pb <= pc else ul)
            line[i] = (line[i] + pred) & 0xFF
        else:
            raise ValueError(f"bad PNG filter type {ftype}")
