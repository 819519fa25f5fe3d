"""The one way imgbuild runs external commands.

On failure the exact command (shell-quoted) and its exit status are reported, with the tail of its
output, through CommandFailed. Secrets passed in *redact* never appear in messages.
"""

from __future__ import annotations

import ctypes
import logging
import os
import shlex
import shutil
import signal
import subprocess
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from builder.errors import CommandFailed, ImgbuildError
from builder.secrets.redact import redact as redact_known

log = logging.getLogger(__name__)
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
_PRCTL = ctypes.CDLL(None, use_errno=True).prctl  # looked up once, here: never dlopen after a fork


def quote(cmd: Sequence[str | Path], redact: Sequence[str] = ()) -> str:
    return _hide(shlex.join(str(c) for c in cmd), redact)


def _hide(text: str, redact: Sequence[str]) -> str:
    """*text* without *redact* and without any secret the process knows (builder.secrets.redact)."""
    for secret in redact:
        if secret:
            text = text.replace(secret, "***")
    return redact_known(text)


def die_with_parent() -> Callable[[], None]:
    """A ``preexec_fn``: the child gets SIGTERM when imgbuild dies, even by SIGKILL (which runs no
    cleanup), so no mmdebstrap or qemu-img is left running as an orphan. (A QEMU started with
    -daemonize is a grandchild and keeps running, as ``make --keep`` wants.) The kernel sends it when
    the thread that started the child ends: every caller waits for its child in that thread.
    Only a prepared C call and plain syscalls run in the child, between fork and exec."""
    parent = os.getpid()

    def in_child() -> None:
        _PRCTL(PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os.kill(os.getpid(), signal.SIGTERM)

    return in_child


def require_tool(name: str, package: str) -> str:
    """Path of executable *name*, or a clear error naming the Debian package that provides it."""
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin:/usr/bin:/bin")
    if not path:
        raise ImgbuildError(f"{name} not found: install the Debian package {package!r} (apt-get install {package})")
    return path


def run(
    cmd: Sequence[str | Path],
    *,
    check: bool = True,
    capture: bool = True,
    input: bytes | None = None,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float | None = None,
    redact: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run *cmd* (an argument list, never a shell string)."""
    argv = [str(c) for c in cmd]
    log.debug("run: %s", quote(argv, redact))
    try:
        proc = subprocess.run(
            argv,
            input=input,
            stdout=subprocess.PIPE if capture else None,
            stderr=subprocess.PIPE if capture else None,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            timeout=timeout,
            check=False,
            preexec_fn=die_with_parent(),
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"command not found: {argv[0]}") from exc
    except subprocess.TimeoutExpired as exc:
        raise CommandFailed(f"command timed out after {timeout:.0f}s: {quote(argv, redact)}") from exc
    if check and proc.returncode != 0:
        tail = b""
        if capture:
            tail = (proc.stderr or b"")[-2000:] or (proc.stdout or b"")[-2000:]
        detail = _hide(tail.decode("utf-8", "replace"), redact)
        raise CommandFailed(
            f"command failed with exit status {proc.returncode}: {quote(argv, redact)}", detail=detail.rstrip()
        )
    return proc
