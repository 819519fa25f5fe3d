"""Supervise an unattended install: follow the installer's syslog, fail fast on a prompt, wait for power-off.

The preseed ends with a power-off, so "the VM stopped" means the install finished. Any question the
installer actually shows (it should ask none) stops the watch at once with the installer's own errors,
instead of waiting hours for a deadline.
"""

from __future__ import annotations

import time
from pathlib import Path

from builder.errors import ImgbuildError
from builder.iso.installer_log import InstallerLog, serial_shows_dialog
from builder.progress import Progress
from builder.targets.base import VM, Target
from builder.targets.console import panic_since

POLL = 2.0


def watch_install(target: Target, vm: VM, *, timeout: float, port: int, progress: Progress,
                  raw_log: Path | None = None) -> list[str]:
    """Start *vm* on the installer and return the installer stages seen once it powers off."""
    with InstallerLog(port, progress=progress, raw_log=raw_log) as log:
        target.start(vm, progress=progress)
        deadline = time.monotonic() + timeout
        while target.is_running(vm):
            panic = panic_since(target.console_log(vm))  # the VM's first boot: its console log started empty
            if panic:
                _fail(target, vm, log, f"the installer's kernel panicked during {log.stage or 'start-up'}: {panic}")
            prompt = _prompt(log, target.console_log(vm))
            if prompt:
                _fail(target, vm, log, f"the installer stopped at a question during {log.stage or 'start-up'}: "
                                       f"{prompt}")
            if time.monotonic() > deadline:
                _fail(target, vm, log, f"the install did not finish within {timeout / 60:.0f} minutes "
                                       f"(last stage: {log.stage or 'none seen'})")
            log.wait_for(lambda lg: bool(lg.prompts()), POLL)
        progress.step(f"installer powered off after stages: {', '.join(log.stages())}")
        return log.stages()


def _prompt(log: InstallerLog, console: Path | None) -> str | None:
    prompts = log.prompts()
    if prompts:
        return prompts[0].text
    if console is not None and console.exists():
        with open(console, "rb") as fh:
            fh.seek(max(0, console.stat().st_size - 65536))
            if serial_shows_dialog(fh.read()):
                return "a dialog is shown on the serial console"
    return None


def _fail(target: Target, vm: VM, log: InstallerLog, message: str) -> None:
    errors = [e.text for e in log.errors()][-8:]
    tail = log.lines()[-15:]
    detail = "\n".join(["installer errors:", *errors] if errors else []) + \
        ("\nlast installer messages:\n" + "\n".join(tail) if tail else "")
    target.stop(vm)
    raise ImgbuildError(message, detail=detail.strip())
