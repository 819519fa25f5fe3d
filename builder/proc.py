"""The one way imgbuild runs external commands.

On failure the exact command (shell-quoted) and its exit status are reported, with the tail of its
output, through CommandFailed. Secrets passed in *redact* never appear in messages.
"""

from __future__ import annotations

import logging
import shlex
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from builder.errors import CommandFailed, ImgbuildError
from builder.secrets.redact import redact as redact_known

log = logging.getLogger(__name__)


def quote(cmd: Sequence[str | Path], redact: Sequence[str] = ()) -> str:
    return _hide(shlex.join(str(c) for c in cmd), redact)


def _hide(text: str, redact: Sequence[str]) -> str:
    """*text* without *redact* and without any secret the process knows (builder.secrets.redact)."""
    for secret in redact:
        if secret:
            text = text.replace(secret, "***")
    return redact_known(text)


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
