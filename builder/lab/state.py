"""A lab's record on disk: written before anything is created, so `lab down` finds what a crashed run left.

One directory per lab (``/run/imgbuild/labs/NAME``, or ``$IMGBUILD_LAB_DIR/NAME``): state.json, the DHCP
servers' pid, lease and log files, and a lock file that makes `lab up`, `lab down` and guests attaching
take turns. Under /run it goes away with a reboot, as the namespaces do.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

from builder.errors import ImgbuildError
from builder.fsutil import exclusive_lock, write_atomic

STATE_VERSION = 1


def labs_root() -> Path:
    return Path(os.environ.get("IMGBUILD_LAB_DIR", "/run/imgbuild/labs"))


def lab_dir(lab: str) -> Path:
    return labs_root() / lab


@dataclass
class DhcpServer:
    bridge: str
    netns: str
    pidfile: str


@dataclass
class LabState:
    lab: str
    host_file: str
    node: str
    namespaces: list[str]  # every namespace this lab makes, recorded before the first is made
    clients: dict[str, str] = field(default_factory=dict)  # role -> namespace
    dhcp: list[DhcpServer] = field(default_factory=list)
    complete: bool = False  # False while lab up runs (or after it crashed)
    version: int = STATE_VERSION

    def save(self) -> None:
        write_atomic(lab_dir(self.lab) / "state.json", json.dumps(asdict(self), indent=2) + "\n", mode=0o600)


def load_state(lab: str) -> LabState | None:
    path = lab_dir(lab) / "state.json"
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise ImgbuildError(f"cannot read lab state {path}: {exc}", detail=f"imgbuild lab down --lab {lab} removes "
                                                                            "the lab anyway") from exc
    if data.get("version") != STATE_VERSION or not isinstance(data.get("namespaces"), list):
        raise ImgbuildError(f"lab state {path} is from another imgbuild version",
                            detail=f"imgbuild lab down --lab {lab} removes the lab anyway")
    data["dhcp"] = [DhcpServer(**d) for d in data.get("dhcp", [])]
    return LabState(**data)


def forget(lab: str) -> None:
    shutil.rmtree(lab_dir(lab), ignore_errors=True)


@contextlib.contextmanager
def lab_lock(lab: str) -> Iterator[None]:
    """One change to lab *lab* at a time (lab up, lab down, a guest's tap joining a bridge)."""
    root = labs_root()
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with exclusive_lock(root / f".{lab}.lock"):
        yield
