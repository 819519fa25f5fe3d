"""Fixtures for end-to-end `imgbuild make` on the local QEMU target (boot tests).

Every VM a test creates is destroyed afterwards, even when the test fails.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


class Imgbuild:
    """The real CLI in a subprocess, with its own recipes and out dirs."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.recipes = root / "recipes"
        self.out = root / "out"
        shutil.copytree(REPO / "recipes", self.recipes)
        self.names: set[str] = set()

    def __call__(self, *args: str, timeout: float = 3600, env: dict | None = None) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "builder", "--recipes-dir", str(self.recipes), "--out-dir", str(self.out), *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, cwd=self.root, env=env)
        # Anything a command may have left running belongs to this fixture's cleanup.
        for arg in args:
            if (self.recipes / f"{arg}.yaml").exists():
                self.names.add(arg)
        sys.stderr.write(f"\n$ imgbuild {' '.join(args)}  -> {proc.returncode}\n{proc.stderr[-4000:]}\n")
        return proc

    def report(self, name: str) -> dict:
        return json.loads((self.out / name / "report.json").read_text())

    def add_recipe(self, name: str, text: str) -> None:
        (self.recipes / f"{name}.yaml").write_text(text)

    def cleanup(self) -> None:
        for name in sorted(self.names):
            subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(self.out), "destroy", name],
                           capture_output=True, timeout=300)


@pytest.fixture(scope="module")
def imgbuild(tmp_path_factory) -> Iterator[Imgbuild]:
    runner = Imgbuild(tmp_path_factory.mktemp("make"))
    try:
        yield runner
    finally:
        runner.cleanup()


def qemu_processes(out: Path) -> list[str]:
    """Command lines of QEMU processes whose files live under *out*."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "qemu-system" in cmdline and str(out) in cmdline:
            found.append(cmdline)
    return found


Check = Callable[[dict, str], dict]


def check_named(report: dict, name: str) -> dict:
    matches = [c for c in report["checks"] if c["check"] == name]
    assert matches, f"no check {name!r} in {[c['check'] for c in report['checks']]}"
    return matches[0]
