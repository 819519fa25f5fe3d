"""Atomic file writes: nothing half-written is ever left under a name the next run would trust."""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644, binary: bool = True) -> Iterator[IO]:
    """Open a temporary file beside *path*; on success fsync and rename it over *path*.

    On any exception the temporary file is removed and *path* is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_atomic(path: Path, data: bytes | str, mode: int = 0o644) -> bool:
    """Write *data* to *path* atomically. Returns False (and writes nothing) if the content is unchanged."""
    raw = data.encode("utf-8") if isinstance(data, str) else data
    path = Path(path)
    try:
        if path.read_bytes() == raw and (path.stat().st_mode & 0o777) == mode:
            return False
    except FileNotFoundError:
        pass
    with atomic_output(path, mode=mode) as fh:
        fh.write(raw)
    return True


def temp_path_for(path: Path) -> Path:
    """A temporary sibling name for tools that write a file themselves (rename it into place after)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".part", dir=path.parent)
    os.close(fd)
    return Path(tmp)


@contextlib.contextmanager
def exclusive_lock(path: Path, *, on_wait: Callable[[], None] | None = None) -> Iterator[None]:
    """Hold an flock on *path* (created when missing) for the duration: one holder per machine.
    *on_wait* is called once when another holder makes us wait."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if on_wait is not None:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
