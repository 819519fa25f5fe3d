"""Fixtures for host networking and the lab: the shipped host descriptions and a real `imgbuild` process."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
HOSTS = REPO / "recipes" / "hosts"
SHIPPED_HOSTS = sorted(p.stem for p in HOSTS.glob("*.yaml"))

Run = Callable[..., subprocess.CompletedProcess[str]]


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
