"""Fixtures for recipe, rendering and CLI tests: a scratch recipes dir and a real `imgbuild` process."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    """A copy of the shipped recipes that a test may add to."""
    target = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", target)
    return target


@pytest.fixture
def out(tmp_path: Path) -> Path:
    return tmp_path / "out"


Run = Callable[..., subprocess.CompletedProcess[str]]


@pytest.fixture
def imgbuild(recipes: Path, out: Path) -> Run:
    """Run the real CLI (python -m builder) with the scratch recipes and out dirs."""

    def run(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "builder", "--recipes-dir", str(recipes), "--out-dir", str(out), *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=cwd or recipes.parent, timeout=120)

    return run


def write_recipe(recipes: Path, name: str, text: str) -> Path:
    path = recipes / f"{name}.yaml"
    path.write_text(text, encoding="utf-8")
    return path
