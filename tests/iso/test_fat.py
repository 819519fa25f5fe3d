"""The FAT16 writer, checked with dosfstools (fsck.fat) and mtools as independent readers."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from builder.iso.fat import FatError, fat16_image
from tests.iso.conftest import need_tool


def test_fsck_and_mtools_read_it(tmp_path: Path) -> None:
    need_tool("fsck.fat", "dosfstools")
    need_tool("mcopy", "mtools")
    files = {
        "EFI/BOOT/BOOTX64.EFI": os.urandom(1_036_152),
        "EFI/BOOT/GRUBX64.EFI": os.urandom(2_348_480),
        "EFI/DEBIAN/GRUB.CFG": b"search --file /x\n",
        "README.TXT": b"",
    }
    image = tmp_path / "efi.img"
    image.write_bytes(fat16_image(files, label="IMGBUILDEFI", serial=0x1234ABCD, epoch=1_700_000_000))
    fsck = subprocess.run(["fsck.fat", "-n", "-v", str(image)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout.decode() + fsck.stderr.decode()
    for path, data in files.items():
        out = tmp_path / "out"
        subprocess.run(["mcopy", "-n", "-o", "-i", str(image), f"::{path}", str(out)], check=True, capture_output=True)
        assert out.read_bytes() == data, path
    listing = subprocess.run(["mdir", "-i", str(image), "::"], capture_output=True, check=True).stdout.decode()
    assert "IMGBUILDEFI" in listing and "1234-ABCD" in listing
    assert len(image.read_bytes()) % 2048 == 0


def test_deterministic() -> None:
    files = {"EFI/BOOT/BOOTX64.EFI": b"x" * 5000}
    assert fat16_image(files, epoch=1_700_000_000) == fat16_image(dict(files), epoch=1_700_000_000)


@pytest.mark.parametrize("name", ["EFI/boot/bootx64.efi.signed", "EFI/BOOT/a b.efi", "EFI/BOOT/toolongname.efi"])
def test_long_or_invalid_names_are_refused(name: str) -> None:
    with pytest.raises(FatError):
        fat16_image({name: b"x"})
