"""Fixtures for the hardening tests: the real CLI in a subprocess, with its own recipes and out dirs."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def cli(*args: str, out: Path | None = None, recipes: Path | None = None, timeout: float = 120,
        env: dict[str, str] | None = None, cwd: Path | None = None,
        launcher: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    """``imgbuild ARGS`` as a user runs it (no PROXMOX_* or IMGBUILD_* from the environment)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "IMGBUILD_"))}
    base["PYTHONPATH"] = str(REPO)
    cmd = [*(launcher or []), sys.executable, "-m", "builder"]
    if recipes is not None:
        cmd += ["--recipes-dir", str(recipes)]
    if out is not None:
        cmd += ["--out-dir", str(out)]
    return subprocess.run([*cmd, *args], capture_output=True, text=True, env={**base, **(env or {})},
                          timeout=timeout, check=False, cwd=cwd)


def assert_no_traceback(proc: subprocess.CompletedProcess[str]) -> None:
    assert "Traceback" not in proc.stderr + proc.stdout, proc.stderr[-3000:]


MEMORY_BOUND = 256 << 20  # peak RSS any imgbuild command may reach on hostile input (a clean run: ~60 MB)


def cli_measured(*args: str, **kwargs: object) -> tuple[subprocess.CompletedProcess[str], int]:
    """``cli`` through tests/iso/peak_rss.py: the process and its peak resident memory in bytes."""
    import tempfile

    with tempfile.NamedTemporaryFile(prefix="peak-rss-") as fh:
        proc = cli(*args, launcher=[sys.executable, "-S", str(REPO / "tests" / "iso" / "peak_rss.py"), fh.name],
                   **kwargs)  # type: ignore[arg-type]
        peak = int(Path(fh.name).read_text() or 0)
    return proc, peak
