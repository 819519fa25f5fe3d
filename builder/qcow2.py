"""What a qcow2 header says (virtual size, backing file), read without qemu-img.

Header layout (QEMU docs/interop/qcow2.txt): magic "QFI\\xfb", then big-endian fields; the backing file
name's offset is at byte 8 (u64) and its length at 16 (u32); the virtual size is at 24 (u64).
"""

from __future__ import annotations

import struct
from pathlib import Path

MAGIC = b"QFI\xfb"
_HEADER = struct.Struct(">4sIQIIQ")  # magic, version, backing_file_offset, backing_file_size, cluster_bits, size


def _header(path: Path) -> tuple[int, int, int] | None:
    """(backing file offset, backing file length, virtual size), or None when *path* is not qcow2."""
    with open(path, "rb") as fh:
        head = fh.read(_HEADER.size)
    if len(head) < _HEADER.size:
        return None
    magic, _version, backing_offset, backing_size, _bits, size = _HEADER.unpack(head)
    return (backing_offset, backing_size, size) if magic == MAGIC else None


def virtual_size(path: Path) -> int | None:
    """The disk size the image presents to a guest, or None when *path* is not qcow2."""
    header = _header(path)
    return header[2] if header else None


def backing_file(path: Path) -> Path | None:
    """The backing file the header names (relative names resolve against the image's directory)."""
    header = _header(path)
    if header is None or header[0] == 0 or header[1] == 0:
        return None
    with open(path, "rb") as fh:
        fh.seek(header[0])
        name = fh.read(header[1]).decode("utf-8", "surrogateescape")
    backing = Path(name)
    return backing if backing.is_absolute() else path.parent / backing
