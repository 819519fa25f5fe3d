"""A small FAT16 file system image written in Python (no mtools, no mkfs, no mount).

Used for the El Torito EFI boot image: a handful of files with 8.3 names (``EFI/BOOT/BOOTX64.EFI`` …).
Deterministic: fixed timestamps and a volume serial chosen by the caller. FAT16 with 512-byte
clusters; the image is sized to the content (and never below the FAT16 minimum of 4085 clusters).
"""

from __future__ import annotations

import re
import struct
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

SECTOR = 512
DIR_ENTRY = 32
ROOT_ENTRIES = 512
MIN_CLUSTERS = 4085 + 11  # FAT16 starts at 4085 clusters; keep a margin
MAX_CLUSTERS = 65524
ATTR_DIR = 0x10
ATTR_ARCHIVE = 0x20
ATTR_VOLUME = 0x08

_NAME = re.compile(r"^[A-Z0-9_~!#$%&'()@^`{}-]{1,8}(\.[A-Z0-9_~!#$%&'()@^`{}-]{1,3})?$")


class FatError(ValueError):
    pass


def _short_name(name: str) -> bytes:
    upper = name.upper()
    if not _NAME.match(upper):
        raise FatError(f"not a valid 8.3 name: {name!r}")
    stem, _, ext = upper.partition(".")
    return stem.ljust(8).encode("ascii") + ext.ljust(3).encode("ascii")


def _dos_datetime(epoch: int) -> tuple[int, int]:
    t = time.gmtime(max(epoch, 315532800))
    year = min(max(t.tm_year, 1980), 2107)
    date = ((year - 1980) << 9) | (t.tm_mon << 5) | t.tm_mday
    clock = (t.tm_hour << 11) | (t.tm_min << 5) | (t.tm_sec // 2)
    return date, clock


@dataclass
class _Node:
    name: str
    data: bytes | None = None  # None: directory
    children: dict[str, _Node] = field(default_factory=dict)
    first_cluster: int = 0

    @property
    def is_dir(self) -> bool:
        return self.data is None


def _entry(name11: bytes, attr: int, cluster: int, size: int, date: int, clock: int) -> bytes:
    return struct.pack(
        "<11sBBBHHHHHHHI", name11, attr, 0, 0, clock, date, date, 0, clock, date, cluster, size
    )


def fat16_image(files: Mapping[str, bytes], *, label: str = "EFI", serial: int = 0x1D1D1D1D, epoch: int = 315532800) -> bytes:
    """A FAT16 image holding *files* ({"EFI/BOOT/BOOTX64.EFI": data, ...}), 8.3 names only."""
    root = _Node("")
    for path, data in sorted(files.items()):
        parts = [p for p in path.strip("/").split("/") if p]
        if not parts:
            raise FatError(f"empty path {path!r}")
        node = root
        for part in parts[:-1]:
            _short_name(part)
            node = node.children.setdefault(part.upper(), _Node(part.upper()))
            if not node.is_dir:
                raise FatError(f"{path}: {part} is a file")
        leaf = parts[-1].upper()
        _short_name(leaf)
        if leaf in node.children:
            raise FatError(f"duplicate path {path!r}")
        node.children[leaf] = _Node(leaf, data=bytes(data))

    cluster_size = SECTOR  # one sector per cluster

    def clusters_for(nbytes: int) -> int:
        return max(1, -(-nbytes // cluster_size))

    # Allocate clusters depth-first in sorted order.
    order: list[_Node] = []

    def walk(node: _Node) -> None:
        for name in sorted(node.children):
            child = node.children[name]
            order.append(child)
            if child.is_dir:
                walk(child)

    walk(root)
    sizes: dict[int, int] = {}
    next_cluster = 2
    for node in order:
        nbytes = len(node.data) if node.data is not None else DIR_ENTRY * (len(node.children) + 2)
        if node.data is not None and not node.data:
            node.first_cluster = 0  # empty files own no cluster
            continue
        n = clusters_for(nbytes)
        node.first_cluster = next_cluster
        sizes[next_cluster] = n
        next_cluster += n
    used = next_cluster - 2
    if len(root.children) > ROOT_ENTRIES - 1:
        raise FatError("too many files in the root directory")
    clusters = max(MIN_CLUSTERS, used + 16)
    if clusters > MAX_CLUSTERS:
        raise FatError("content too large for this FAT16 writer (32 MiB)")

    fat_sectors = -(-((clusters + 2) * 2) // SECTOR)
    reserved = 1
    root_sectors = ROOT_ENTRIES * DIR_ENTRY // SECTOR
    total = reserved + 2 * fat_sectors + root_sectors + clusters
    total += -total % 4  # whole 2 KiB CD sectors
    clusters = total - reserved - 2 * fat_sectors - root_sectors  # any rounding slack becomes clusters
    if -(-((clusters + 2) * 2) // SECTOR) > fat_sectors:
        raise FatError("internal FAT sizing error")

    image = bytearray(total * SECTOR)
    date, clock = _dos_datetime(epoch)

    # Boot sector with the FAT16 extended BIOS parameter block.
    bpb = struct.pack(
        "<3s8sHBHBHHBHHHII",
        b"\xeb\x3c\x90",
        b"IMGBUILD",
        SECTOR,
        1,
        reserved,
        2,
        ROOT_ENTRIES,
        total if total < 0x10000 else 0,
        0xF8,
        fat_sectors,
        32,
        64,
        0,
        total if total >= 0x10000 else 0,
    )
    ebpb = struct.pack("<BBBI11s8s", 0x80, 0, 0x29, serial & 0xFFFFFFFF, label.upper().ljust(11)[:11].encode("ascii"), b"FAT16   ")  # noqa: E501
    image[0 : len(bpb)] = bpb
    image[len(bpb) : len(bpb) + len(ebpb)] = ebpb
    image[510:512] = b"\x55\xaa"

    # FAT
    fat = bytearray(fat_sectors * SECTOR)
    struct.pack_into("<HH", fat, 0, 0xFFF8, 0xFFFF)
    for first, n in sizes.items():
        for i in range(n):
            cluster = first + i
            value = 0xFFFF if i == n - 1 else cluster + 1
            struct.pack_into("<H", fat, cluster * 2, value)
    fat_start = reserved * SECTOR
    image[fat_start : fat_start + len(fat)] = fat
    image[fat_start + len(fat) : fat_start + 2 * len(fat)] = fat

    root_start = (reserved + 2 * fat_sectors) * SECTOR
    data_start = root_start + root_sectors * SECTOR

    def cluster_offset(cluster: int) -> int:
        return data_start + (cluster - 2) * cluster_size

    def dir_entries(node: _Node, parent_cluster: int) -> bytes:
        out = bytearray()
        if node is not root:
            out += _entry(b".          ", ATTR_DIR, node.first_cluster, 0, date, clock)
            out += _entry(b"..         ", ATTR_DIR, parent_cluster, 0, date, clock)
        else:
            out += _entry(label.upper().ljust(11)[:11].encode("ascii"), ATTR_VOLUME, 0, 0, date, clock)
        for name in sorted(node.children):
            child = node.children[name]
            if child.is_dir:
                out += _entry(_short_name(name), ATTR_DIR, child.first_cluster, 0, date, clock)
            else:
                assert child.data is not None
                out += _entry(_short_name(name), ATTR_ARCHIVE, child.first_cluster, len(child.data), date, clock)
        return bytes(out)

    root_dir = dir_entries(root, 0)
    image[root_start : root_start + len(root_dir)] = root_dir

    def write_tree(node: _Node) -> None:
        for name in sorted(node.children):
            child = node.children[name]
            if child.is_dir:
                parent = 0 if node is root else node.first_cluster
                blob = dir_entries(child, parent)
                off = cluster_offset(child.first_cluster)
                image[off : off + len(blob)] = blob
                write_tree(child)
            elif child.data:
                off = cluster_offset(child.first_cluster)
                image[off : off + len(child.data)] = child.data

    write_tree(root)
    return bytes(image)
