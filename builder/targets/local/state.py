"""A local VM's state file (``out/NAME/vm/state.json``): enough to restart, reattach to and remove it.

QEMU runs detached (``-daemonize``), so a VM kept with ``make --keep`` outlives imgbuild; the next
imgbuild process finds it again from this file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from builder.errors import ImgbuildError
from builder.fsutil import write_atomic

STATE_VERSION = 1


def load_state(vmdir: Path) -> dict | None:
    path = vmdir / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ImgbuildError(f"cannot read VM state {path}: {exc}") from exc
    if data.get("version") != STATE_VERSION:
        raise ImgbuildError(f"VM state {path} was written by another imgbuild version; destroy the VM and recreate it")
    return data


def save_state(vmdir: Path, state: dict) -> None:
    state["version"] = STATE_VERSION
    write_atomic(vmdir / "state.json", json.dumps(state, indent=2, sort_keys=True) + "\n", mode=0o600)


def process_alive(pid: int | None, marker: str) -> bool:
    """Is *pid* a live (not zombie) process whose command line contains *marker* (guards pid reuse)?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    return marker in cmdline


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def o_direct_supported(path: Path) -> bool:
    """Can *path* (a file, or a new file in a directory) be opened with O_DIRECT, as cache=none needs?
    tmpfs, for one, cannot."""
    flag = getattr(os, "O_DIRECT", 0)
    if path.is_file():
        try:
            os.close(os.open(path, os.O_RDONLY | flag))
            return True
        except OSError:
            return False
    probe = path / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | flag, 0o600)
    except OSError:
        return False
    else:
        os.close(fd)
        return True
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
