"""The installer method's mechanics on the local target, with a tiny ISO standing in for the installer:
boot a blank disk from CD-ROM, the guest powers itself off (GRUB's ``halt``), wait_stopped returns,
the ISO is ejected, the boot order changed and the VM started again from its disk."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.proc import run
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, VMSpec
from builder.targets.local import LocalTarget

pytestmark = pytest.mark.boot


class Steps:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def step(self, text: str) -> None:
        self.lines.append(text)

    def note(self, text: str) -> None:
        self.lines.append(text)

    def transfer(self, label: str, done: int, total: int | None) -> None:
        pass


@pytest.fixture(scope="module")
def halt_iso(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("halt")
    (root / "boot/grub").mkdir(parents=True)
    (root / "boot/grub/grub.cfg").write_text(
        "serial --unit=0 --speed=115200\nterminal_output serial console\necho 'stand-in installer: powering off'\nhalt\n"
    )
    iso = root.parent / "halt.iso"
    run(["grub-mkrescue", "-o", iso, root, "-d", "/usr/lib/grub/i386-pc"])
    return iso


def test_boot_cdrom_power_off_eject_and_boot_disk(local_target: LocalTarget, halt_iso: Path) -> None:
    target = local_target
    iso = target.stage(halt_iso, "iso", label="stand-in-installer")
    spec = VMSpec(
        name="installer-flow",
        memory_mib=256,
        disks=(DiskSpec(2 * 1024**3),),  # blank: SeaBIOS falls through to the CD-ROM
        cdroms=(iso, None),
        nics=(NicSpec("52:54:00:0f:0f:01"),),
        network=GuestNetwork("dhcp"),
        boot=("disk", "cdrom"),
    )
    vm = target.create_vm(spec)
    try:
        target.start(vm)
        steps = Steps()
        target.wait_stopped(vm, timeout=120, progress=steps)
        assert not target.is_running(vm)
        assert "stand-in installer: powering off" in target.console_log(vm).read_text(errors="replace")

        target.set_cdrom(vm, 0, None)
        target.set_boot(vm, ("disk",))
        target.start(vm)
        assert target.is_running(vm)
        argv = " ".join(json.loads((Path(vm.ident) / "qemu.argv").read_text()))
        assert "virtio-blk-pci,drive=drive-disk0,id=disk0,bootindex=1" in argv
        assert "if=none,id=drive-cd0,media=cdrom,readonly=on " in argv and "halt" not in argv
        assert "id=cdrom0 " in argv + " "  # no bootindex on the CD-ROM any more
        target.stop(vm)
        assert not target.is_running(vm)
    finally:
        target.destroy(vm)
