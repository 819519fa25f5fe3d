"""Fixtures for the Proxmox VE target's tests: the simulator, a targets file pinning it, targets.

Every test that talks to the simulator gets it through ``pve_sim`` / ``pve_sim_factory``
(tests.pvesim.fixtures), once per PVE version (9.1, 8.4): any request the simulator rejects (its schema,
a missing privilege, an offline node) fails the test.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.image.build import GoldenImage
from builder.pipeline import make as make_module
from builder.proc import run
from builder.recipe import load_recipe
from builder.recipe.model import Recipe
from builder.targets.pve.connect import open_pve_target
from builder.targets.pve.target import PveTarget
from builder.verify.checks import Outcome
from tests.pvesim.fixtures import pve_sim, pve_sim_factory, pve_version
from tests.pvesim.simulator import PveSimulator

REPO = Path(__file__).resolve().parents[2]
SECRET_ENV = "IMGBUILD_TEST_PVE_SECRET"


def write_targets_file(path: Path, sim: PveSimulator, *, name: str = "sim", secret_file: Path | None = None,
                       **overrides: Any) -> Path:
    """A targets file with one target *name* pointing at *sim*, its certificate pinned."""
    entry: dict[str, Any] = {
        "url": sim.url, "token_id": sim.token.full_id, "node": sim.node, "iso_storage": "local",
        "disk_storage": "local-lvm", "fingerprint": sim.fingerprint, "task_timeout": 60,
    }
    if secret_file is not None:
        secret_file.write_text(sim.token.secret + "\n")
        secret_file.chmod(0o600)
        entry["token_secret_file"] = str(secret_file)
    else:
        entry["token_secret_env"] = SECRET_ENV
    for key, value in overrides.items():
        if value is None:
            entry.pop(key, None)
        else:
            entry[key] = value
    path.write_text(yaml.safe_dump({"targets": {name: entry}}, sort_keys=False))
    return path


@pytest.fixture
def sim_env(pve_sim: PveSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PveSimulator:
    """The simulator, with IMGBUILD_TARGETS naming it ``sim`` and the secret in the environment."""
    write_targets_file(tmp_path / "targets.yaml", pve_sim)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
    monkeypatch.setenv(SECRET_ENV, pve_sim.token.secret)
    monkeypatch.delenv("PROXMOX_URL", raising=False)
    return pve_sim


@pytest.fixture
def target(sim_env: PveSimulator, tmp_path: Path) -> Iterator[PveTarget]:
    t = open_pve_target("sim", tmp_path / "out")
    try:
        yield t
    finally:
        t.close()


@pytest.fixture
def small_iso(tmp_path: Path) -> Path:
    path = tmp_path / "seed.iso"
    path.write_bytes(os.urandom(64 * 1024))
    return path


@pytest.fixture
def small_qcow2(tmp_path: Path) -> Path:
    path = tmp_path / "golden.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1G"])
    return path


def imgbuild(*args: str, env: dict[str, str], cwd: Path = REPO, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the real CLI as a subprocess."""
    return subprocess.run([sys.executable, "-m", "builder", *args], env=env, cwd=cwd, capture_output=True,
                          text=True, timeout=timeout, check=False)


def cli_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXMOX_")}
    env.update({"IMGBUILD_OUT": str(tmp_path / "out"), "PYTHONPATH": str(REPO)}, **extra)
    return env


def uploads_in(sim: PveSimulator) -> list[Any]:
    return [r for r in sim.requests_matching("POST", r"/upload$")]


def no_orphans(sim: PveSimulator, *, keep: Callable[[str], bool] = lambda volid: False) -> None:
    """The simulator holds no VM and no ISO (except volumes *keep* accepts, e.g. cached golden images)."""
    sim.wait_tasks()
    assert sim.vm_ids() == [], sim.vms()
    left = [v for v in sim.volume_ids() if not keep(v)]
    assert left == [], left


@pytest.fixture
def web_server() -> Recipe:
    return load_recipe("web-server", REPO / "recipes")


@pytest.fixture
def stubbed(monkeypatch: pytest.MonkeyPatch, small_qcow2: Path) -> list[str]:
    """A small golden image instead of a real one; checks that pass without a guest. Returns the checked VMs."""
    checked: list[str] = []

    def golden(spec, refresh=False, progress=None):  # type: ignore[no-untyped-def]
        return GoldenImage(small_qcow2, "test-key", cached=True)

    def fake_verify(recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):  # type: ignore[no-untyped-def]
        assert known_hosts.exists()
        checked.append(f"{vm.name}@{address}")
        return [Outcome("ssh", True, "login", f"stub: {address}")]

    monkeypatch.setattr(make_module, "build_golden_image", golden)
    monkeypatch.setattr(make_module, "verify", fake_verify)
    monkeypatch.setattr(PveTarget, "address_timeout", 3.0)  # the agent_timeout setting: 900 s otherwise
    return checked
