"""A guest whose kernel panics is reported at once (with its console), not after the address deadline."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import GuestCrashed
from builder.pipeline.make import boot
from builder.pipeline.report import Report
from builder.progress import NullProgress
from builder.recipe import load_recipe
from builder.targets.base import VM, DiskSpec, NicSpec, VMSpec
from builder.targets.console import kernel_panic, panic_since
from builder.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]

# Seen on this machine: the trixie installer kernel under multi-threaded TCG on a busy host.
PANIC_CONSOLE = b"""\
[    4.579481] sched_clock: Marking stable (4532252152, 44238993)->(4612036566, -35545421)\r
[    4.582729] Oops: int3: 0000 [#1] PREEMPT SMP NOPTI\r
[    4.583249] RIP: 0010:sched_clock_cpu+0x9/0x1d0\r
[    4.586580] Kernel panic - not syncing: Fatal exception in interrupt\r
[    6.423672] ---[ end Kernel panic - not syncing: Fatal exception in interrupt ]---\r
"""


def test_the_panic_line_is_found_in_console_output(tmp_path: Path) -> None:
    assert kernel_panic(PANIC_CONSOLE) == "Kernel panic - not syncing: Fatal exception in interrupt"
    assert kernel_panic(b"[    1.0] Run /init as init process\n") is None
    log = tmp_path / "console.log"
    log.write_bytes(PANIC_CONSOLE + b"\n[    0.000000] Linux version 6.12 (second boot)\n")
    assert panic_since(log) is not None
    assert panic_since(log, offset=len(PANIC_CONSOLE)) is None, "a panic of an earlier boot does not count"
    assert panic_since(tmp_path / "missing.log") is None and panic_since(None) is None


def test_local_target_reads_only_the_current_boot(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    vm = target.create_vm(VMSpec(name="panicky", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:0a"),)))
    console = target.console_log(vm)
    assert console is not None and target.console_panic(vm) is None
    console.write_bytes(PANIC_CONSOLE)
    assert target.console_panic(vm) == "Kernel panic - not syncing: Fatal exception in interrupt"
    vm.state.console_offset = console.stat().st_size  # what start() records for the next boot
    assert target.console_panic(vm) is None



def test_a_panic_under_requested_multi_threaded_tcg_says_how_to_avoid_it(tmp_path: Path) -> None:
    from builder.targets.local.accel import qemu_version, tcg_threads

    target = LocalTarget(tmp_path / "out")
    vm = target.create_vm(VMSpec(name="racy", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:0b"),)))
    target.console_log(vm).write_bytes(PANIC_CONSOLE)
    vm.state.accel, vm.state.tcg_threads = "tcg", "multi"
    with pytest.raises(GuestCrashed, match="kernel panicked") as raised:
        target._raise_if_panicked(vm, vm.state)
    racy_qemu = tcg_threads("tcg", qemu_version())[0] == "single"  # QEMU 7.2 here: yes
    assert ("plain --accel tcg runs it single-threaded" in raised.value.detail) == racy_qemu
    vm.state.tcg_threads = "single"
    with pytest.raises(GuestCrashed) as raised:
        target._raise_if_panicked(vm, vm.state)
    assert "--accel tcg" not in raised.value.detail


class PanicsOnce:
    """Just the calls boot() makes, with a guest that panics on its first *panics* boots."""

    name = "fake"

    def __init__(self, panics: int) -> None:
        self.panics = panics
        self.running = False
        self.calls: list[str] = []

    def is_running(self, vm: VM) -> bool:
        return self.running

    def start(self, vm: VM, **_: object) -> None:
        self.calls.append("start")
        self.running = True

    def stop(self, vm: VM) -> None:
        self.calls.append("stop")
        self.running = False

    def guest_addresses(self, vm: VM, timeout: float) -> list[str]:
        if self.panics:
            self.panics -= 1
            raise GuestCrashed("fake's kernel panicked: Kernel panic - not syncing: Fatal exception in interrupt")
        return ["192.168.1.250"]


@pytest.mark.parametrize("panics", [0, 1, 2])
def test_boot_restarts_a_guest_that_panicked_once(panics: int) -> None:
    recipe = load_recipe("web-server", REPO / "recipes")
    target = PanicsOnce(panics)
    report = Report(recipe="web-server", target="fake", method="image")
    vm = VM(name="web-server", target="fake", ident="1")
    if panics == 2:
        with pytest.raises(GuestCrashed, match="kernel panicked"):
            boot(recipe, target, vm, NullProgress(), report)  # type: ignore[arg-type]
        assert target.calls == ["start", "stop", "start"]
        return
    assert boot(recipe, target, vm, NullProgress(), report) == "192.168.1.250"  # type: ignore[arg-type]
    assert target.calls == ["start", "stop", "start"][: 1 + 2 * panics]
    assert len(report.vm.get("restarts", [])) == panics
