"""Repairing the GPT of an isohybrid image after pycdlib rewrote it.

Debian's ISOs carry an isohybrid MBR plus a GPT (xorriso ``-isohybrid-gpt-basdat``) so they also boot
from a USB stick. pycdlib keeps them when it remasters, moving the EFI partition to the EFI image's new
place, but it leaves the partition-array CRC stale and puts a wrong array LBA (and last usable LBA)
in the backup header. This module recomputes those fields in place, touching only the GPT sectors.
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

SECTOR = 512
SIGNATURE = b"EFI PART"
_HEADER = struct.Struct("<8sIIIIQQQQ16sQIII")


@dataclass
class GptHeader:
    offset: int  # byte offset in the image
    raw: bytearray
    revision: int
    size: int
    current_lba: int
    backup_lba: int
    first_usable: int
    last_usable: int
    entries_lba: int
    num_entries: int
    entry_size: int
    entries_crc: int

    @property
    def array_bytes(self) -> int:
        return self.num_entries * self.entry_size

    @property
    def array_sectors(self) -> int:
        return -(-self.array_bytes // SECTOR)


def _read_header(fp: BinaryIO, lba: int) -> GptHeader | None:
    fp.seek(lba * SECTOR)
    raw = bytearray(fp.read(SECTOR))
    if len(raw) < _HEADER.size or raw[:8] != SIGNATURE:
        return None
    (_sig, revision, size, _crc, _res, current, backup, first, last, _guid, entries_lba, num, entry_size, entries_crc) = (
        _HEADER.unpack_from(raw, 0)
    )
    if not 92 <= size <= SECTOR or entry_size < 128 or num > 1024:
        return None
    return GptHeader(lba * SECTOR, raw, revision, size, current, backup, first, last, entries_lba, num, entry_size, entries_crc)


def _write_header(fp: BinaryIO, header: GptHeader) -> None:
    raw = header.raw
    struct.pack_into("<Q", raw, 24, header.current_lba)
    struct.pack_into("<Q", raw, 32, header.backup_lba)
    struct.pack_into("<Q", raw, 40, header.first_usable)
    struct.pack_into("<Q", raw, 48, header.last_usable)
    struct.pack_into("<Q", raw, 72, header.entries_lba)
    struct.pack_into("<I", raw, 88, header.entries_crc)
    struct.pack_into("<I", raw, 16, 0)
    struct.pack_into("<I", raw, 16, zlib.crc32(bytes(raw[: header.size])))
    fp.seek(header.offset)
    fp.write(raw)


def _iso_sectors(fp: BinaryIO) -> int:
    """The ISO 9660 volume size in 512-byte sectors (from the primary volume descriptor)."""
    fp.seek(16 * 2048)
    pvd = fp.read(2048)
    if pvd[1:6] != b"CD001":
        return 0
    blocks, block_size = struct.unpack_from("<I", pvd, 80)[0], struct.unpack_from("<H", pvd, 128)[0]
    return blocks * block_size // SECTOR


class GptError(ValueError):
    pass


def repair_gpt(path: Path) -> bool:
    """Make the primary and backup GPT of *path* consistent and correctly checksummed.

    The backup array and header go at the end of the file (which must extend past the ISO volume, as
    pycdlib's isohybrid padding does). Returns False (and changes nothing) when the image has no GPT.
    """
    with open(path, "r+b") as fp:
        primary = _read_header(fp, 1)
        if primary is None:
            return False
        fp.seek(0, 2)
        image_sectors = fp.tell() // SECTOR
        backup_lba = image_sectors - 1
        backup_entries = backup_lba - primary.array_sectors
        if backup_entries < _iso_sectors(fp):
            raise GptError("no room for the backup GPT after the ISO volume")
        fp.seek(primary.entries_lba * SECTOR)
        array = fp.read(primary.array_bytes)
        crc = zlib.crc32(array)
        last_usable = backup_entries - 1

        primary.backup_lba, primary.last_usable, primary.entries_crc = backup_lba, last_usable, crc
        _write_header(fp, primary)

        fp.seek(backup_entries * SECTOR)
        fp.write(array)
        backup = GptHeader(
            offset=backup_lba * SECTOR,
            raw=bytearray(primary.raw),  # same disk GUID and fields; only the locations differ
            revision=primary.revision,
            size=primary.size,
            current_lba=backup_lba,
            backup_lba=1,
            first_usable=primary.first_usable,
            last_usable=last_usable,
            entries_lba=backup_entries,
            num_entries=primary.num_entries,
            entry_size=primary.entry_size,
            entries_crc=crc,
        )
        _write_header(fp, backup)
    return True
