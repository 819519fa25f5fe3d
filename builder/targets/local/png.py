"""PNG helpers for screenshots: convert QEMU's PPM screendump when this QEMU cannot write PNG itself."""

from __future__ import annotations

from builder.png import is_png, rgb_png

__all__ = ["is_png", "ppm_to_png"]


def ppm_to_png(ppm: bytes) -> bytes:
    """A binary PPM (P6, maxval 255, what QEMU's screendump writes) as an RGB PNG."""
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while ppm[pos : pos + 1].isspace():
            pos += 1
        if ppm[pos : pos + 1] == b"#":
            pos = ppm.index(b"\n", pos) + 1
            continue
        end = pos
        while end < len(ppm) and not ppm[end : end + 1].isspace():
            end += 1
        fields.append(ppm[pos:end])
        pos = end
    pos += 1  # the single whitespace before the raster
    magic, width, height, maxval = fields[0], int(fields[1]), int(fields[2]), int(fields[3])
    if magic != b"P6" or maxval != 255:
        raise ValueError(f"unsupported PPM ({magic!r}, maxval {maxval})")
    stride = width * 3
    raster = ppm[pos : pos + stride * height]
    if len(raster) != stride * height:
        raise ValueError("truncated PPM")
    return rgb_png(width, height, raster)
