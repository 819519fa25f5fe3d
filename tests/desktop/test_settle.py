"""When is a desktop done painting? Two screenshots that differ in under 1% of their pixels (a clock, a CPU graph)."""

from __future__ import annotations

from builder.png import rgb_png
from builder.verify.checks import SETTLED_CHANGE
from builder.verify.pngcheck import changed_share, decode_png


def picture(width: int, height: int, changed: int = 0) -> bytes:
    """A two-colour picture; the first *changed* pixels of each of the bottom rows painted differently."""
    raster = bytearray(bytes([20, 60, 90]) * (width * height))
    for i in range(width * height // 2):
        raster[i * 3 : i * 3 + 3] = b"\x30\x30\x30"
    for y in range(height - 4, height):
        for x in range(changed // 4):
            at = (y * width + x) * 3
            raster[at : at + 3] = b"\xff\x00\x00"
    return rgb_png(width, height, bytes(raster))


def test_a_ticking_clock_is_settled_a_painted_panel_is_not() -> None:
    still = decode_png(picture(320, 200))
    assert changed_share(still, still) == 0.0
    clock = decode_png(picture(320, 200, changed=40))  # 40 of 64000 pixels
    assert changed_share(still, clock) == 40 / 64000 < SETTLED_CHANGE
    panel = decode_png(picture(320, 200, changed=1280))  # four full rows: 2%
    assert changed_share(still, panel) == 0.02 > SETTLED_CHANGE
    assert changed_share(still, decode_png(picture(640, 400))) == 1.0  # another size: all changed
