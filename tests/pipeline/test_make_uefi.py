"""A recipe with UEFI firmware (vm.bios: ovmf) end to end: a GPT/ESP golden image booted with OVMF."""

from __future__ import annotations

import pytest

from tests.pipeline.conftest import check_named

pytestmark = pytest.mark.boot

GOLDEN_UEFI = """\
extends: golden-base
description: golden-base on UEFI firmware
vm:
  bios: ovmf
"""


def test_golden_base_on_uefi(imgbuild) -> None:
    imgbuild.add_recipe("golden-uefi", GOLDEN_UEFI)
    result = imgbuild("make", "golden-uefi")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("golden-uefi")
    assert report["ok"] and check_named(report, "ssh")["ok"]
    assert "-ovmf-" in report["cache"]["image"]["path"]
    console = (imgbuild.out / "golden-uefi" / "console.log").read_bytes()
    assert b"efi: EFI v" in console  # the kernel was started by UEFI firmware


def test_refresh_image_rebuilds_the_image_and_the_vm(imgbuild) -> None:
    """Nightly rebuilds: --refresh-image builds the golden image again from the mirror's current packages;
    the VM built on the old image is replaced, and the old image's staged bytes go with it."""
    before = imgbuild.report("golden-uefi")
    staged = imgbuild.out / ".staged"
    old_images = set(staged.glob("*.qcow2"))
    assert len(old_images) == 1

    result = imgbuild("make", "golden-uefi", "--refresh-image")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("golden-uefi")
    assert report["ok"] and check_named(report, "ssh")["ok"]
    assert report["cache"]["image"]["reused"] is False
    assert report["cache"]["image"]["path"] == before["cache"]["image"]["path"]  # same spec, same cache entry
    assert report["cache"]["image"]["sha256"] != before["cache"]["image"]["sha256"]
    assert report["vm"]["reused"] is False, "a VM on the old image is not up to date"
    new_images = set(staged.glob("*.qcow2"))
    assert len(new_images) == 1 and not new_images & old_images, "the old image's staged copy was removed"
