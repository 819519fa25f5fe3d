"""Assemble a bootable raw disk from a root directory without mounting anything.

BIOS (SeaBIOS): MBR, one bootable ext4 partition from 1 MiB; GRUB's boot.img in sector 0 and its
i386-pc core image from sector 1 (the gap before the partition).
EFI (OVMF): GPT, a FAT EFI system partition holding \\EFI\\BOOT\\BOOTX64.EFI (a GRUB core image that
finds the root by UUID), then the ext4 root.
The filesystems are written straight into the image file: ``mkfs.ext4 -d ROOT -E offset=…``,
``mkfs.vfat --offset`` and mtools; the partition table with sfdisk on the file.

Reproducible: every identifier is passed in (derived from the image key by the caller) and every tool runs
with SOURCE_DATE_EPOCH, so the same tree gives the same bytes. mke2fs honours it from e2fsprogs 1.47.1
(inode change and creation times, superblock times); older ones copy the build's change times into every
inode, and ``mke2fs_reproducible()`` says so.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.image.configure import BootFiles
from builder.proc import require_tool, run

MKE2FS_REPRODUCIBLE = (1, 47, 1)  # first e2fsprogs whose mke2fs -d takes its times from SOURCE_DATE_EPOCH
# Features newer mke2fs.conf files turn on that bookworm's GRUB 2.06 cannot read (metadata_csum_seed is an
# incompatible feature to it) or that older guests' tools lack: the root filesystem keeps Debian 12's defaults.
EXT4_WITHOUT = "^metadata_csum_seed,^orphan_file"

MiB = 1024 * 1024
SECTOR = 512
ESP_SIZE = 64 * MiB
GPT_TAIL = MiB  # room for the backup GPT at the end of the disk
ESP_TYPE = "C12A7328-F81F-11D2-BA4B-00A0C93EC3B8"
LINUX_TYPE = "0FC63DAF-8483-4772-8E79-3D69D8477DE4"


@dataclass(frozen=True)
class Partition:
    start: int  # bytes
    size: int  # bytes


@dataclass(frozen=True)
class DiskLayout:
    bios: str
    size: int
    root: Partition
    esp: Partition | None = None


@dataclass(frozen=True)
class DiskIds:
    """Every identifier and time that would otherwise be random or the build's clock."""

    epoch: int  # SOURCE_DATE_EPOCH for mkfs and mtools
    root_uuid: str  # ext4 filesystem UUID
    hash_seed: str  # ext4 directory hash seed (a UUID)
    label_id: str  # MBR: "0x1234abcd"; GPT: the disk GUID
    esp_serial: str | None = None  # FAT volume serial "ABCD-1234" (EFI images)
    partition_uuids: tuple[str, ...] = ()  # GPT partition GUIDs, in table order


def layout_for(bios: str, size: int) -> DiskLayout:
    """Where the partitions go on a disk of *size* bytes (pure)."""
    if bios == "seabios":
        return DiskLayout(bios, size, root=Partition(MiB, size - MiB))
    esp = Partition(MiB, ESP_SIZE)
    root_start = esp.start + esp.size
    return DiskLayout(bios, size, root=Partition(root_start, size - root_start - GPT_TAIL), esp=esp)


def sfdisk_script(layout: DiskLayout, ids: DiskIds | None = None) -> str:
    """sfdisk input for *layout* (pure); with *ids* the disk and partition identifiers are fixed."""
    def sec(n: int) -> int:
        return n // SECTOR

    def part_uuid(i: int) -> str:
        return f", uuid={ids.partition_uuids[i]}" if ids and len(ids.partition_uuids) > i else ""

    label_id = f"label-id: {ids.label_id}\n" if ids else ""
    if layout.esp is None:
        return (f"label: dos\n{label_id}"
                f"start={sec(layout.root.start)}, size={sec(layout.root.size)}, type=83, bootable\n")
    return (
        f"label: gpt\n{label_id}"
        f"start={sec(layout.esp.start)}, size={sec(layout.esp.size)}, type={ESP_TYPE}, name=esp{part_uuid(0)}\n"
        f"start={sec(layout.root.start)}, size={sec(layout.root.size)}, type={LINUX_TYPE}, name=root{part_uuid(1)}\n"
    )


def mke2fs_version() -> tuple[int, ...]:
    """The installed mke2fs's version, e.g. (1, 47, 2)."""
    proc = run([require_tool("mke2fs", "e2fsprogs"), "-V"], check=False)
    match = re.search(rb"mke2fs (\d+)\.(\d+)(?:\.(\d+))?", proc.stdout + proc.stderr)
    if not match:
        raise ImgbuildError("cannot tell the version of mke2fs (e2fsprogs)")
    return tuple(int(g or 0) for g in match.groups())


def mke2fs_reproducible() -> bool:
    return mke2fs_version() >= MKE2FS_REPRODUCIBLE


def assemble_disk(raw: Path, root: Path, layout: DiskLayout, boot: BootFiles, ids: DiskIds) -> None:
    """Write a bootable raw disk image *raw* holding the tree *root*."""
    require_tool("mkfs.ext4", "e2fsprogs")
    require_tool("sfdisk", "fdisk")
    env = fixed_time_env(ids.epoch)
    with open(raw, "wb") as fh:
        fh.truncate(layout.size)
    run([
        "mkfs.ext4", "-q", "-F", "-L", "root", "-U", ids.root_uuid, "-O", EXT4_WITHOUT,
        "-E", f"offset={layout.root.start},hash_seed={ids.hash_seed}", "-d", root, raw, f"{layout.root.size // 1024}k",
    ], env=env)  # fmt: skip
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], input=sfdisk_script(layout, ids).encode())
    if layout.esp is None:
        _install_bios_boot(raw, layout, boot)
    else:
        _make_esp(raw, layout.esp, boot, ids.esp_serial or "", env)


def fixed_time_env(epoch: int) -> dict[str, str]:
    """The environment for mkfs and mtools: their clock is *epoch* (mke2fs >= 1.47.1, mtools) and
    E2FSPROGS_FAKE_TIME covers the superblock times of older mke2fs."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(epoch), "E2FSPROGS_FAKE_TIME": str(epoch), "MTOOLS_SKIP_CHECK": "1"}


def _install_bios_boot(raw: Path, layout: DiskLayout, boot: BootFiles) -> None:
    assert boot.boot_img is not None
    boot_code = boot.boot_img.read_bytes()[:440]  # keep the disk signature and partition table
    core = boot.core_img.read_bytes()
    room = layout.root.start - SECTOR
    if len(core) > room:
        raise ImgbuildError(f"GRUB core image is {len(core)} bytes; only {room} fit before the first partition")
    fd = os.open(raw, os.O_WRONLY)
    try:
        os.pwrite(fd, boot_code, 0)
        os.pwrite(fd, core, SECTOR)
        os.fsync(fd)
    finally:
        os.close(fd)


def _make_esp(raw: Path, esp: Partition, boot: BootFiles, serial: str, env: dict[str, str]) -> None:
    require_tool("mkfs.vfat", "dosfstools")
    require_tool("mcopy", "mtools")
    volid = serial.replace("-", "")
    # --invariant: no creation time in the volume label entry (the serial is given with -i).
    run([
        "mkfs.vfat", "--invariant", "-F", "32", "-s", "1", "-n", "EFI", "-i", volid,
        "--offset", str(esp.start // SECTOR), raw, str(esp.size // 1024),
    ])  # fmt: skip
    image = f"{raw}@@{esp.start}"
    # mtools dates new entries with SOURCE_DATE_EPOCH; -m keeps the core image's (clamped) time.
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], env=env)
    run(["mcopy", "-m", "-i", image, boot.core_img, "::/EFI/BOOT/BOOTX64.EFI"], env=env)
