"""newc ("070701") cpio archives written in Python, gzip-compressed for appending to an initrd.

The Linux kernel unpacks every archive concatenated in an initramfs, so ``initrd.gz + newc_gz(...)``
adds files to the installer's root file system (d-i then loads ``/preseed.cfg`` by itself).
Output is deterministic: fixed mtime, root ownership, gzip header without name or time.
"""

from __future__ import annotations

import gzip
import stat
from collections.abc import Iterable
from dataclasses import dataclass

TRAILER = "TRAILER!!!"
MAGIC = b"070701"


@dataclass(frozen=True)
class Entry:
    """One archive member. Directories have ``data=b""`` and a directory mode."""

    name: str  # path inside the archive without a leading slash: "preseed.cfg", "etc/foo"
    data: bytes = b""
    mode: int = stat.S_IFREG | 0o644
    mtime: int = 0


def file(name: str, data: bytes, mode: int = 0o644, mtime: int = 0) -> Entry:
    return Entry(name=name, data=data, mode=stat.S_IFREG | (mode & 0o7777), mtime=mtime)


def directory(name: str, mode: int = 0o755, mtime: int = 0) -> Entry:
    return Entry(name=name, data=b"", mode=stat.S_IFDIR | (mode & 0o7777), mtime=mtime)


def _pad4(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, entry: Entry, namesize: int, filesize: int, nlink: int) -> bytes:
    fields = (ino, entry.mode, 0, 0, nlink, entry.mtime, filesize, 0, 0, 0, 0, namesize, 0)
    return MAGIC + b"".join(b"%08X" % value for value in fields)


def _member(ino: int, entry: Entry, nlink: int) -> bytes:
    name = entry.name.encode("utf-8") + b"\0"
    header = _header(ino, entry, len(name), len(entry.data), nlink)
    return header + name + _pad4(len(header) + len(name)) + entry.data + _pad4(len(entry.data))


def newc(entries: Iterable[Entry], *, first_inode: int = 0x1D0000) -> bytes:
    """An uncompressed newc archive of *entries* (in the given order) plus the trailer.

    Inode numbers start high so they never collide with the initrd's own archive; every member has
    nlink 1 (files) or 2 (directories), so the kernel never treats two members as hard links.
    """
    out: list[bytes] = []
    ino = first_inode
    for entry in entries:
        name = entry.name.strip("/")
        if not name or ".." in name.split("/"):
            raise ValueError(f"unsafe cpio member name {entry.name!r}")
        is_dir = stat.S_ISDIR(entry.mode)
        if is_dir and entry.data:
            raise ValueError(f"directory {name!r} cannot have data")
        out.append(_member(ino, Entry(name, entry.data, entry.mode, entry.mtime), 2 if is_dir else 1))
        ino += 1
    out.append(_member(0, Entry(TRAILER, b"", 0, 0), 1))
    return b"".join(out)


def newc_gz(entries: Iterable[Entry]) -> bytes:
    """``newc(entries)`` gzip-compressed, byte-for-byte stable for the same entries."""
    return gzip.compress(newc(entries), compresslevel=9, mtime=0)


def preseed_archive(preseed: bytes) -> bytes:
    """The gzip-compressed cpio that adds ``/preseed.cfg`` to an initrd when appended to it."""
    return newc_gz([file("preseed.cfg", preseed, 0o644)])
