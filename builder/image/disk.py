"""Assemble a bootable raw disk from a root directory without mounting anything.

BIOS (SeaBIOS): MBR, one bootable ext4 partition from 1 MiB; GRUB's boot.img in sector 0 and its
i386-pc core image from sector 1 (the gap before the partition).
EFI (OVMF): GPT, a FAT EFI system partition holding \\EFI\\BOOT\\BOOTX64.EFI (a GRUB core image that
finds the root by UUID), then the ext4 root.
The filesystems are written straight into the image file: ``mkfs.ext4 -d ROOT -E offset=…``,
``mkfs.vfat --offset`` and mtools; the partition table with sfdisk on the file.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.image.configure import BootFiles
from builder.proc import require_tool, run

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


def layout_for(bios: str, size: int) -> DiskLayout:
    """Where the partitions go on a disk of *size* bytes (pure)."""
    if bios == "seabios":
        return DiskLayout(bios, size, root=Partition(MiB, size - MiB))
    esp = Partition(MiB, ESP_SIZE)
    root_start = esp.start + esp.size
    return DiskLayout(bios, size, root=Partition(root_start, size - root_start - GPT_TAIL), esp=esp)


def sfdisk_script(layout: DiskLayout) -> str:
    """sfdisk input for *layout* (pure)."""
    def sec(n: int) -> int:
        return n // SECTOR

    if layout.esp is None:
        return f"label: dos\nstart={sec(layout.root.start)}, size={sec(layout.root.size)}, type=83, bootable\n"
    return (
        "label: gpt\n"
        f"start={sec(layout.esp.start)}, size={sec(layout.esp.size)}, type={ESP_TYPE}, name=esp\n"
        f"start={sec(layout.root.start)}, size={sec(layout.root.size)}, type={LINUX_TYPE}, name=root\n"
    )


def assemble_disk(
    raw: Path, root: Path, layout: DiskLayout, boot: BootFiles, *, root_uuid: str, esp_serial: str | None = None
) -> None:
    """Write a bootable raw disk image *raw* holding the tree *root*."""
    require_tool("mkfs.ext4", "e2fsprogs")
    require_tool("sfdisk", "fdisk")
    with open(raw, "wb") as fh:
        fh.truncate(layout.size)
    run([
        "mkfs.ext4", "-q", "-F", "-L", "root", "-U", root_uuid, "-E", f"offset={layout.root.start}",
        "-d", root, raw, f"{layout.root.size // 1024}k",
    ])  # fmt: skip
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], input=sfdisk_script(layout).encode())
    if layout.esp is None:
        _install_bios_boot(raw, layout, boot)
    else:
        _make_esp(raw, layout.esp, boot, esp_serial or "")


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


def _make_esp(raw: Path, esp: Partition, boot: BootFiles, serial: str) -> None:
    require_tool("mkfs.vfat", "dosfstools")
    require_tool("mcopy", "mtools")
    volid = serial.replace("-", "")
    run([
        "mkfs.vfat", "-F", "32", "-s", "1", "-n", "EFI", "-i", volid, "--offset", str(esp.start // SECTOR), raw,
        str(esp.size // 1024),
    ])  # fmt: skip
    image = f"{raw}@@{esp.start}"
    env = {**os.environ, "MTOOLS_SKIP_CHECK": "1"}
    run(["mmd", "-i", image, "::/EFI", "::/EFI/BOOT"], env=env)
    run(["mcopy", "-i", image, boot.core_img, "::/EFI/BOOT/BOOTX64.EFI"], env=env)
