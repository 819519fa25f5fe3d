"""Helpers for the crash-consistency tests: the real CLI as a process to signal, and what it leaves."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.hardening.conftest import REPO

SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGKILL": signal.SIGKILL}


class Run(subprocess.Popen[bytes]):
    """``imgbuild`` running, its stdout and stderr in a file (a pipe could fill up and stall it)."""

    log: Path

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def start(out: Path, *args: str, env: dict[str, str] | None = None, recipes: Path = REPO / "recipes") -> Run:
    base = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "IMGBUILD_"))}
    out.parent.mkdir(parents=True, exist_ok=True)
    log = out.parent / f"imgbuild-{'-'.join(args)[:60]}-{len(list(out.parent.glob('imgbuild-*')))}.log"
    with open(log, "wb") as fh:
        run = Run([sys.executable, "-m", "builder", "--recipes-dir", str(recipes), "--out-dir", str(out),
                   *args], env={**base, "PYTHONPATH": str(REPO), **(env or {})}, stdout=fh, stderr=subprocess.STDOUT)
    run.log = log
    return run


def exit_status(proc: subprocess.Popen[bytes], timeout: float = 120) -> int:
    rc = proc.wait(timeout=timeout)
    return 128 - rc if rc < 0 else rc  # killed by signal N: 128+N, as a shell reports it


def parts_under(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.part"))


def sha256sums(out: Path) -> str:
    return (out / "web-server" / "SHA256SUMS").read_text()
