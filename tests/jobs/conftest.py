"""Fixtures for the job runner, releases, diff, history and status on the PVE simulator.

The simulator is PVE's API with its schema enforced; the guest side is stubbed the way tests/pve does it
(a small golden image, checks that pass or fail without a guest): what is tested is the runner, the event
stream, what is left on the target after each job, and the CLI around them. Boot tests live elsewhere.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from builder.image.build import GoldenImage, image_key
from builder.image.manifest import Manifest
from builder.pipeline import freshness
from builder.pipeline import make as make_module
from builder.verify.checks import Outcome
from tests.pve.conftest import REPO, sim_env, small_qcow2, target
from tests.pvesim.fixtures import pve_sim_factory
from tests.pvesim.schema import DEFAULT_VERSION
from tests.pvesim.simulator import PveSimulator


@pytest.fixture
def pve_version() -> str:
    """The simulator's default PVE version only: what these tests check (the runner, releases as tags and a
    description, status, the page) is the same on every version; tests/pve runs the target on each."""
    return DEFAULT_VERSION


@pytest.fixture
def pve_sim(pve_sim_factory) -> PveSimulator:
    """The simulator with both bridges the shipped recipes use: vmbr0, and vmbr1 as lxde-desktop's NAT bridge."""
    return pve_sim_factory(bridges={"vmbr0": None, "vmbr1": "10.10.10.1/24"})  # vmbr1: the NAT bridge


class Guests:
    """The stubbed guest side: which VMs were checked, and which should fail or misbehave."""

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.failing: set[str] = set()  # VM names (or name endings, like "-check") whose checks fail
        self.hooks: dict[str, Callable[[], None]] = {}  # VM name -> called while its checks run
        self.images: list[tuple[str, bool]] = []  # (image key, refresh) of every golden image asked for
        self.manifest: Manifest | None = None  # the stub image's package manifest (None: it has none)

    def verify(self, recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):
        assert known_hosts.exists()
        self.checked.append(vm.name)
        hook = self.hooks.get(vm.name)
        if hook is not None:
            hook()
        ok = not any(vm.name == f or vm.name.endswith(f) for f in self.failing)
        return [Outcome("ssh", True, "login", f"stub: {address}"),
                Outcome("service ssh", ok, "active", "active" if ok else "inactive (stub)")]


@pytest.fixture
def guests(monkeypatch: pytest.MonkeyPatch, small_qcow2: Path) -> Guests:
    stub = Guests()

    def golden(spec, refresh=False, progress=None):
        stub.images.append((image_key(spec), refresh))
        return GoldenImage(small_qcow2, "test-key", cached=not refresh, manifest=stub.manifest)

    monkeypatch.setattr(make_module, "build_golden_image", golden)
    monkeypatch.setattr(freshness, "image_path", lambda spec: small_qcow2)  # status looks where make got it
    monkeypatch.setattr(make_module, "verify", stub.verify)
    monkeypatch.setattr(make_module, "ADDRESS_TIMEOUT", 5.0)
    return stub


@pytest.fixture
def cli(sim_env, tmp_path: Path) -> Callable[..., int]:
    """main() with the shipped recipes, an out dir of the test's own and the simulator as target ``sim``."""
    from builder.cli.main import main

    out = tmp_path / "out"

    def run(*args: str) -> int:
        return main(["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(out), *args])

    run.out = out  # type: ignore[attr-defined]
    return run


def stubbed_process(cli, small_qcow2: Path, tmp_path: Path, hang: str,
                    *args: str) -> tuple[subprocess.Popen[str], Path]:
    """imgbuild ARGS in a process of its own (tests/jobs/stubbed_cli.py: the guest side stubbed as here), once
    the checks of a VM whose name ends with *hang* hang: the test then signals or kills it there."""
    signal_file = tmp_path / "hanging"
    signal_file.unlink(missing_ok=True)
    env = {**os.environ, "STUB_IMAGE": str(small_qcow2), "STUB_HANG": hang, "STUB_SIGNAL": str(signal_file),
           "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, str(REPO / "tests" / "jobs" / "stubbed_cli.py"), "--recipes-dir",
                             str(REPO / "recipes"), "--out-dir", str(cli.out), *args], env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not signal_file.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.1)
    return proc, signal_file
