"""Fixtures for the hardening tests: the real CLI in a subprocess, with its own recipes and out dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, out: Path | None = None, recipes: Path | None = None, timeout: float = 120,
        env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """``imgbuild ARGS`` as a user runs it (no PROXMOX_* from the environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "IMGBUILD_"))}
    base["PYTHONPATH"] = str(REPO)
    cmd = [sys.executable, "-m", "builder"]
    if recipes is not None:
        cmd += ["--recipes-dir", str(recipes)]
    if out is not None:
        cmd += ["--out-dir", str(out)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env={**base, **(env or {})},
                          timeout=timeout, check=False, cwd=cwd)


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]
