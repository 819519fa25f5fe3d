"""Last line of defence for values written into a debconf (preseed) line.

Recipes are validated before rendering, so this should never fire; if it does, rendering stops rather than
writing a line that could end early or smuggle in another directive.
"""

from __future__ import annotations

from typing import Any

from builder.errors import ImgbuildError


class UnsafeValue(ImgbuildError):
    pass


def debconf_value(value: Any) -> Any:
    """Jinja ``finalize`` hook: every ``{{ }}`` output passes through here."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    for ch in text:
        if ord(ch) < 0x20 or ord(ch) == 0x7F or ch in "\u2028\u2029\x85":
            raise UnsafeValue(f"refusing to write a control character (U+{ord(ch):04X}) into the preseed: {text[:40]!r}")
    if text.endswith("\\"):
        raise UnsafeValue(f"refusing to write a value ending in a backslash into the preseed: {text[:40]!r}")
    return text
