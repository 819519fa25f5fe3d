"""Fixtures for host networking and the lab: the shipped host descriptions and a real `imgbuild` process."""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from builder.lab.plan import LabPlan

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "recipes" / "hosts"
SHIPPED_HOSTS = sorted(p.stem for p in HOSTS.glob("*.yaml"))

Run = Callable[..., subprocess.CompletedProcess[str]]

# Labs made by tests are named for the test process, so runs side by side on one machine (two worktrees, a
# lead's run of main) never touch each other's labs; what a killed run left is removed by the next one.
RUN = f"net{os.getpid()}"
RUN_LAB = re.compile(r"^imgbuild-(net(\d+)-[a-z0-9-]+)_")


def lab_name(role: str) -> str:
    """The name of this test process's lab for *role* (at most 24 characters, as lab names must be)."""
    name = f"{RUN}-{role}"
    assert len(name) <= 24, name
    return name


@pytest.fixture(scope="session", autouse=True)
def remove_labs_of_dead_test_runs() -> None:
    from builder.lab import netns as ns
    from builder.lab.down import teardown

    stale = set()
    for netns in ns.list_netns():
        m = RUN_LAB.match(netns)
        if m and not Path(f"/proc/{m[2]}").exists():
            stale.add(m[1])
    for lab in sorted(stale):
        teardown(lab)


@pytest.fixture
def imgbuild(tmp_path: Path) -> Run:
    """Run the real CLI (python -m builder) from the repository, output in a scratch directory."""

    def run(*args: str, timeout: float = 120, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "builder", "--out-dir", str(tmp_path / "out"), *args]
        return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)

    return run


def write_host(tmp_path: Path, text: str, name: str = "host") -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def no_lab_left(lab: str) -> list[str]:
    """Namespaces and processes of lab *lab* that still exist (should be none)."""
    from builder.lab import netns as ns
    from builder.lab.plan import lab_prefix

    left = [n for n in ns.list_netns() if n.startswith(lab_prefix(lab))]
    return left + [f"pid {p} in {n}" for n in left for p in ns.pids(n)]


@pytest.fixture(scope="module")
def lab_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The labs' records for this module, away from /run/imgbuild (IMGBUILD_LAB_DIR)."""
    path = tmp_path_factory.mktemp("labs")
    old = os.environ.get("IMGBUILD_LAB_DIR")
    os.environ["IMGBUILD_LAB_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("IMGBUILD_LAB_DIR", None)
    else:
        os.environ["IMGBUILD_LAB_DIR"] = old


@contextlib.contextmanager
def lab_from(host_file: Path, lab: str) -> Iterator[LabPlan]:
    """Lab *lab* built from *host_file* for the duration; removed afterwards even when a test fails, and
    whatever an earlier interrupted run left under that name is removed first."""
    from builder.hostnet import load_host
    from builder.lab.down import lab_down
    from builder.lab.plan import lab_plan
    from builder.lab.up import lab_up

    lab_down(lab)
    plan = lab_plan(load_host(host_file), lab)
    try:
        lab_up(plan)
        yield plan
    finally:
        lab_down(lab)
        assert no_lab_left(lab) == []
