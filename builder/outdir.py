"""A recipe's output directory ``OUT/NAME/``: what it must be before anything is written there, and its lock.

``OUT/NAME`` holds private keys and is written to freely, so it must be a real directory owned by this
user, mode 0700, holding no symbolic link: a link there or in it (say, to ``~/.ssh``) is refused, never
followed. One job at a
time writes it: ``render``, ``build``, ``make`` and ``clone`` hold ``OUT/NAME/.lock`` for their whole run,
and a second one fails at once, naming the holder (two renders at once could pin one host key in
known_hosts while user-data carries another).
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import sweep_parts

LOCK = ".lock"


def recipe_dir(out_root: Path, name: str) -> Path:
    """``out_root/name``, created 0700 when missing; refused when it is a link, not a directory, or not ours."""
    out_root = Path(out_root)
    path = out_root / name
    try:
        out_root.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            os.mkdir(path, 0o700)
        st = os.lstat(path)
    except OSError as exc:
        raise unusable(out_root, exc) from None
    if stat.S_ISLNK(st.st_mode):
        raise InvalidInput(f"{path} is a symbolic link (to {os.readlink(path)}); imgbuild does not follow it",
                           detail="the output of a recipe holds private keys: remove the link, or choose "
                                  "another --out-dir")
    if not stat.S_ISDIR(st.st_mode):
        raise InvalidInput(f"{path} exists and is not a directory")
    if st.st_uid != os.geteuid():
        raise InvalidInput(f"{path} belongs to uid {st.st_uid}, not to you (uid {os.geteuid()})",
                           detail="its keys and seeds would be another user's: remove it or choose another --out-dir")
    if stat.S_IMODE(st.st_mode) != 0o700:
        os.chmod(path, 0o700)
    try:
        links = sorted(entry.name for entry in os.scandir(path) if entry.is_symlink())
    except OSError as exc:
        raise unusable(out_root, exc) from None
    if links:  # a key, hash or seed file that leads elsewhere is read or replaced there: refused instead
        raise InvalidInput(f"{path} holds symbolic links imgbuild did not make: {', '.join(links)}",
                           detail="imgbuild never follows them (its keys and seeds live here): remove them")
    return path


def unusable(out_root: Path, exc: OSError) -> InvalidInput:
    reason = exc.strerror or str(exc)
    if isinstance(exc, (FileExistsError, NotADirectoryError)):
        reason = "it (or a directory above it) is not a directory"
    return InvalidInput(f"cannot use the output directory {out_root}: {reason}",
                        detail="choose a writable directory with --out-dir or $IMGBUILD_OUT")


@contextlib.contextmanager
def recipe_lock(out_root: Path, name: str, what: str) -> Iterator[Path]:
    """Hold ``OUT/NAME/.lock`` while *what* (e.g. "make web-server") runs; yield ``OUT/NAME``.
    Another holder: fail at once with its pid, command and start time."""
    path = recipe_dir(out_root, name)
    lock = path / LOCK
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    except OSError as exc:
        raise unusable(Path(out_root), exc) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise unusable(Path(out_root), exc) from None
            raise ImgbuildError(f"{path} is in use by {_holder(fd)}",
                                detail="one render, build, make or clone of a recipe at a time: wait for it, "
                                       "or stop it") from None
        record = {"pid": os.getpid(), "command": what, "since": int(time.time())}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(record).encode(), 0)
        sweep_parts(path)  # what a killed job (SIGKILL, a power cut) was still writing
        yield path
    finally:
        os.close(fd)  # releases the flock; the file stays (removing it would race a waiting locker)


def _holder(fd: int) -> str:
    try:
        record = json.loads(os.pread(fd, 4096, 0) or b"{}")
        since = time.strftime("%H:%M:%S", time.localtime(int(record["since"])))
        return f"imgbuild {record['command']} (pid {int(record['pid'])}, since {since})"
    except (OSError, ValueError, KeyError, TypeError):
        return "another imgbuild process"
