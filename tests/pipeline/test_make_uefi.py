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

