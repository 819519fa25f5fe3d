"""Reading a guest's serial console: did its kernel panic?

A panicked Linux guest stays up (QEMU keeps running, ``panic=0``), so a supervisor waiting for the guest
agent or for the installer's power-off would otherwise wait until its deadline.
"""

from __future__ import annotations

import re
from pathlib import Path

_PANIC = re.compile(rb"Kernel panic - not syncing:[^\r\n]*")
READ_AT_MOST = 1 << 20  # a panic message is in the last lines; never read a whole multi-MiB log


def kernel_panic(console: bytes) -> str | None:
    """The ``Kernel panic - not syncing: ...`` line in *console* output, or None."""
    found = _PANIC.search(console)
    return found.group(0).decode("utf-8", "replace").strip() if found else None


def panic_since(path: Path | None, offset: int = 0) -> str | None:
    """kernel_panic() of what the console log at *path* received after byte *offset* (this boot)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, 2)
            fh.seek(max(offset, size - READ_AT_MOST))
            return kernel_panic(fh.read())
    except OSError:
        return None
