"""SIGTERM on the Proxmox VE target (issue 10 item 6): handled like Ctrl-C, so an interrupted make leaves no
VM and no seed ISO (it holds the guest's private host key) on the node, and exits 143. SIGKILL cannot clean
up; the next make must then finish the job: verified VM, seed detached and removed.

imgbuild runs in a forked child (tests/hardening/forked.py) against the simulator with the golden image and
the guest checks stubbed (nothing boots); the simulator's tasks take a second, so each signal lands while
PVE is still working on what it was asked.
"""

from __future__ import annotations

import json
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.image.build import GoldenImage
from builder.pipeline import make as make_module
from builder.proc import run
from builder.verify.checks import Outcome
from tests.hardening.forked import Child, fork_main, poll
from tests.pve.conftest import REPO, SECRET_ENV, no_orphans, write_targets_file
from tests.pvesim.fixtures import pve_sim_factory, pve_version  # noqa: F401
from tests.pvesim.simulator import PveSimulator


def image_volume(volid: str) -> bool:
    return volid.startswith("local:import/")


@pytest.fixture
def start_sim(pve_sim_factory: Callable[..., PveSimulator], tmp_path: Path,  # noqa: F811
              monkeypatch: pytest.MonkeyPatch) -> Callable[[float], PveSimulator]:
    """A simulator named ``sim`` in IMGBUILD_TARGETS whose tasks take *task_duration* seconds."""

    def start(task_duration: float) -> PveSimulator:
        sim = pve_sim_factory(task_duration=task_duration)
        write_targets_file(tmp_path / "targets.yaml", sim)
        monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
        monkeypatch.setenv(SECRET_ENV, sim.token.secret)
        monkeypatch.delenv("PROXMOX_URL", raising=False)
        return sim

    return start


@pytest.fixture
def sim(start_sim: Callable[[float], PveSimulator]) -> PveSimulator:
    return start_sim(0.05)


@pytest.fixture
def verifying(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Stub the golden image and the checks. While the returned file exists, the checks hold on (a
    guest being verified), after writing ``<file>.reached``."""
    hold = tmp_path / "hold-verify"
    small_qcow2 = tmp_path / "golden.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", small_qcow2, "1G"])

    def golden(spec, refresh=False, progress=None):  # type: ignore[no-untyped-def]
        return GoldenImage(small_qcow2, "test-key", cached=True)

    def checks(recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):  # type: ignore[no-untyped-def]
        if hold.exists():
            hold.with_suffix(".reached").touch()
            time.sleep(120)
        return [Outcome("ssh", True, "login", f"stub: {address}")]

    monkeypatch.setattr(make_module, "build_golden_image", golden)
    monkeypatch.setattr(make_module, "verify", checks)
    return hold


def make_argv(out: Path) -> list[str]:
    return ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(out), "make", "web-server", "--target", "sim"]


def seed_uploaded(sim: PveSimulator) -> bool:
    return any("-seed-" in str(r.params.get("filename", "")) for r in sim.requests_matching("POST", r"/upload$"))


def vm_created(sim: PveSimulator) -> bool:
    return bool(sim.requests_matching("POST", r"/nodes/pve/qemu$"))


# When to send SIGTERM, and how long the simulator's tasks take (long enough for it to land inside one)
WHEN: dict[str, tuple[Callable[[PveSimulator, Path], object], float]] = {
    "seed import running": (lambda sim, hold: seed_uploaded(sim), 1.0),
    "VM being created": (lambda sim, hold: vm_created(sim), 1.0),
    "verifying": (lambda sim, hold: hold.with_suffix(".reached").exists(), 0.05),
}


@pytest.mark.parametrize("when", sorted(WHEN))
def test_sigterm_leaves_no_vm_and_no_seed_on_the_node(when: str, start_sim: Callable[[float], PveSimulator],
                                                      verifying: Path, tmp_path: Path) -> None:
    reached, task_duration = WHEN[when]
    sim = start_sim(task_duration)
    verifying.touch()
    child = fork_main(make_argv(tmp_path / "out"), tmp_path / "make.log")
    try:
        poll(when, lambda: reached(sim, verifying), timeout=60)
    finally:
        child.signal(signal.SIGTERM)
    assert child.wait() == 143, child.output()
    assert "imgbuild: terminated (SIGTERM)" in child.output() and "Traceback" not in child.output()
    no_orphans(sim, keep=image_volume)
    report = json.loads((tmp_path / "out" / "web-server" / "report.json").read_text())
    assert report["ok"] is False and report["error"].startswith("Terminated")


def signalled_while_verifying(sig: int, verifying: Path, tmp_path: Path) -> Child:
    """``make`` in a child, sent *sig* once its (stubbed) checks run: the VM exists, its seed attached."""
    verifying.touch()
    child = fork_main(make_argv(tmp_path / "out"), tmp_path / "make.log")
    try:
        poll("verification", verifying.with_suffix(".reached").exists, timeout=60)
    finally:
        child.signal(sig)
    return child


def test_after_sigkill_the_next_make_verifies_and_forgets_the_seed(sim: PveSimulator, verifying: Path,
                                                                   tmp_path: Path) -> None:
    child = signalled_while_verifying(signal.SIGKILL, verifying, tmp_path)
    assert child.wait() == 128 + signal.SIGKILL
    (vmid,) = sim.vm_ids()
    assert sim.volume_ids("iso"), "SIGKILL cannot clean up: the seed is still there"

    verifying.unlink()
    again = fork_main(make_argv(tmp_path / "out"), tmp_path / "again.log")
    assert again.wait() == 0, again.output()
    report = json.loads((tmp_path / "out" / "web-server" / "report.json").read_text())
    assert report["ok"] and report["vm"]["reused"] is True
    assert sim.vm_ids() == [vmid]
    assert sim.vm_config(vmid)["ide2"].startswith("none,media=cdrom")  # detached ...
    assert sim.volume_ids("iso") == []  # ... and removed


def test_destroy_removes_the_seed_a_killed_make_left(sim: PveSimulator, verifying: Path, tmp_path: Path) -> None:
    signalled_while_verifying(signal.SIGKILL, verifying, tmp_path).wait()
    assert sim.vm_ids() and sim.volume_ids("iso")
    destroy = fork_main(["--out-dir", str(tmp_path / "out"), "destroy", "web-server", "--target", "sim"],
                        tmp_path / "destroy.log")
    assert destroy.wait() == 0, destroy.output()
    no_orphans(sim, keep=image_volume)


def test_sigterm_is_ignored_again_while_cleaning_up(sim: PveSimulator, verifying: Path, tmp_path: Path) -> None:
    """systemd may signal the whole unit twice; the second SIGTERM must not cut the cleanup short."""
    child = signalled_while_verifying(signal.SIGTERM, verifying, tmp_path)
    poll("cleanup to start", lambda: sim.requests_matching("POST", r"/status/stop$"), timeout=30)
    os.kill(child.pid, signal.SIGTERM)
    assert child.wait() == 143, child.output()
    assert "still cleaning up" in child.output()
    no_orphans(sim, keep=image_volume)
