"""Lint and type checks are part of the suite: ruff (rules in pyproject.toml) and mypy on builder/."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def run_tool(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / argv[0]), *argv[1:]], cwd=REPO, capture_output=True, text=True, timeout=900)


def test_ruff_finds_nothing() -> None:
    proc = run_tool("ruff", "check", "--no-cache", "--output-format", "concise", ".")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy_finds_nothing() -> None:
    proc = run_tool("mypy", "--no-incremental")
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_vulture_finds_no_dead_code() -> None:
    """Dead code in builder/ (tests/vulture_whitelist.py lists, with reasons, what is used after all)."""
    proc = run_tool("vulture", "builder", "tests/vulture_whitelist.py", "--min-confidence", "60")
    assert proc.returncode == 0, proc.stdout + proc.stderr
