"""Atomic file writes: nothing half-written is ever left under a name the next run would trust.

Work in progress is written to a ``.NAME.XXXXXXXX.part`` sibling and renamed into place. The writer
holds a shared flock on its part file, so ``sweep_parts`` can tell the debris of a killed process (no
holder) from a file another process is still writing, and remove only the former.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import signal
import stat
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

PART = ".part"


@contextlib.contextmanager
def atomic_output(path: Path, mode: int = 0o644, binary: bool = True) -> Iterator[IO]:
    """Open a temporary file beside *path*; on success fsync and rename it over *path*.

    On any exception the temporary file is removed and *path* is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    try:
        with held_signals():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART, dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_SH)  # live: sweep_parts leaves it alone
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb" if binary else "w", encoding=None if binary else "utf-8") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        raise


@contextlib.contextmanager
def held_signals() -> Iterator[None]:
    """Ctrl-C and SIGTERM wait (blocked) while the block runs, and arrive when it ends. Around creating a
    part file and keeping its name, inside the caller's ``try``: an interrupt between the two would leave
    the file behind, unnamed, for nobody to remove.

    The mask is read before it changes and restored in ``finally``: a signal that arrived just before the
    block took effect raises its KeyboardInterrupt as ``pthread_sigmask`` returns, and the mask must not stay
    blocked then (this thread's later children would inherit it and never see a Ctrl-C)."""
    held = {signal.SIGINT, signal.SIGTERM}
    try:
        previous = signal.pthread_sigmask(signal.SIG_BLOCK, set())
    except (ValueError, OSError):  # a thread that may not block them: nothing to guard
        yield
        return
    try:
        signal.pthread_sigmask(signal.SIG_BLOCK, held)
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


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


@contextlib.contextmanager
def part_path(path: Path, mode: int = 0o600) -> Iterator[Path]:
    """A temporary sibling of *path* for code (or a tool) that writes a file by name; rename it into place
    inside the block. Held (flock) while the block runs; removed afterwards unless renamed."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = -1, None
    try:
        with held_signals():
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PART, dir=path.parent)
        fcntl.flock(fd, fcntl.LOCK_SH)
        os.fchmod(fd, mode)
        yield Path(tmp)
    finally:
        if fd >= 0:
            os.close(fd)
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)


def sweep_parts(directory: Path, min_age: float = 2.0) -> list[Path]:
    """Remove the ``.*.part`` files a killed process left in *directory* (no writer holds them; older than
    *min_age* seconds, so one just created is not mistaken). Returns what was removed."""
    removed: list[Path] = []
    try:
        candidates = [p for p in Path(directory).iterdir() if p.name.startswith(".") and p.name.endswith(PART)]
    except OSError:
        return removed
    now = time.time()
    for part in candidates:
        try:
            fd = os.open(part, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError:
            continue
        try:
            st = os.fstat(fd)
            if not stat.S_ISREG(st.st_mode) or now - st.st_mtime < min_age:
                continue
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if os.stat(part, follow_symlinks=False).st_ino == st.st_ino:  # still the file we hold
                os.unlink(part)
                removed.append(part)
        except OSError:
            continue  # held by a live writer, or gone already
        finally:
            os.close(fd)
    return removed


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
