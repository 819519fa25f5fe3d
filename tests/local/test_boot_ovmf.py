"""OVMF (UEFI) golden image: GPT + EFI system partition, booted on the local target with OVMF and a
per-VM copy of OVMF_VARS, personalised from a DHCP seed.

Opt-in (it builds a second golden image and UEFI firmware is slow under TCG): IMGBUILD_TEST_OVMF=1."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.image import ImageSpec, build_golden_image
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, VMSpec
from builder.targets.local import LocalTarget
from tests.local.guest import KeyPair, dhcp_network, ssh_run, user_data, write_seed

pytestmark = [pytest.mark.boot,
              pytest.mark.optin("IMGBUILD_TEST_OVMF", "one more golden image, and UEFI firmware is slow under TCG")]

OVMF_SPEC = ImageSpec(release="trixie", tasks=("ssh-server",), bios="ovmf")
MAC = "52:54:00:e1:f1:01"


def test_ovmf_image_boots_with_uefi(local_target: LocalTarget, tmp_path: Path) -> None:
    image = build_golden_image(OVMF_SPEC)
    host_key, user_key = KeyPair.generate(), KeyPair.generate()
    seed_path = write_seed(
        tmp_path / "seed.iso", instance_id="uefi-1", hostname="uefi1",
        user=user_data("uefi1", user_key, host_key), network=dhcp_network(MAC),
    )  # fmt: skip
    target = local_target
    spec = VMSpec(
        name="uefi",
        bios="ovmf",
        disks=(DiskSpec(8 * 1024**3, source=target.stage(image.path, "image", label="uefi")),),
        cdroms=(target.stage(seed_path, "iso", label="uefi-seed"),),
        nics=(NicSpec(MAC),),
        network=GuestNetwork("dhcp"),
    )
    vm = target.create_vm(spec)
    try:
        assert Path(vm.state.ovmf_vars).is_file()
        target.start(vm)
        assert "10.0.2.15" in target.guest_addresses(vm, timeout=600)
        ep = target.endpoint(vm, "10.0.2.15", 22)
        out = ssh_run(ep.port, host_key, user_key, "hostname; test -d /sys/firmware/efi && echo uefi", timeout=300)
        assert out.split() == ["uefi1", "uefi"]
    finally:
        target.destroy(vm)
