"""Where a local VM's QMP and guest-agent sockets live: a directory only this user can enter.

The VM's own directory (``OUT/NAME/vm``, 0700) when the socket paths fit in ``sun_path``; otherwise a
short per-VM directory under ``$XDG_RUNTIME_DIR/imgbuild`` (systemd's per-user tmpfs) or, without one,
under the cache (``CACHE/run``). Whoever can connect to the QMP socket controls the VM, so each directory
on the way is checked, never trusted because of its name: a real directory (not a link), owned by
this user, closed to group and others.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from builder.cachedir import cache_root
from builder.errors import ImgbuildError

MAX_SOCKET_PATH = 100  # sun_path holds 108 bytes; "qmp.sock" and "qga.sock" must fit


def socket_dir(vmdir: Path) -> Path:
    """The socket directory of the VM in *vmdir* (a path only; ``ensure_private`` makes it)."""
    if len(str(vmdir / "qmp.sock")) <= MAX_SOCKET_PATH:
        return vmdir
    digest = hashlib.sha256(str(vmdir).encode()).hexdigest()[:16]
    return _runtime_base() / digest


def _runtime_base() -> Path:
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg and _is_private(Path(xdg)):  # under sudo it can still name the invoking user's directory
        return Path(xdg) / "imgbuild"
    return cache_root() / "run"


def _is_private(path: Path) -> bool:
    try:
        st = os.lstat(path)
    except OSError:
        return False
    return stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & 0o077


def ensure_private(path: Path) -> Path:
    """Create *path* (and its parents up to an existing directory) mode 0700, and check what exists."""
    if len(str(path / "qmp.sock")) > MAX_SOCKET_PATH:
        raise ImgbuildError(f"the socket directory {path} is too long for a socket path",
                            detail="set $XDG_RUNTIME_DIR, or a shorter $IMGBUILD_CACHE or output directory")
    missing = []
    at = path
    while not os.path.lexists(at):
        missing.append(at)
        at = at.parent
    for new in reversed(missing):
        try:
            os.mkdir(new, 0o700)
        except FileExistsError:
            pass
        except OSError as exc:
            raise ImgbuildError(f"cannot create the socket directory {new}: {exc.strerror}") from None
    _check(path.parent)  # who can rename entries there could swap the directory under us
    _check(path)
    return path


def _check(path: Path) -> None:
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ImgbuildError(f"the socket directory {path} is not a directory of its own (a link?)",
                            detail="remove it; imgbuild creates it")
    if st.st_uid != os.geteuid():
        raise ImgbuildError(f"the socket directory {path} belongs to uid {st.st_uid}, not to you",
                            detail="someone else could control the VM through it: remove it; imgbuild creates it")
    if st.st_mode & 0o077:
        os.chmod(path, 0o700)  # ours, but open to others (an older imgbuild, a umask): close it
