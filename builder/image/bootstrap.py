"""Install the image's packages into a directory with mmdebstrap (apt's resolver; debootstrap cannot
resolve cloud-init's dependencies), reusing downloaded .debs across builds."""

from __future__ import annotations

import collections
import contextlib
import logging
import os
import signal
import subprocess
import time
from pathlib import Path

from builder.cachedir import cache_dir
from builder.errors import CommandFailed, ImgbuildError
from builder.fsutil import exclusive_lock
from builder.image.spec import ImageSpec, package_set, variant
from builder.proc import die_with_parent, quote, require_tool
from builder.progress import NullProgress, Progress
from builder.secrets.redact import redact

log = logging.getLogger(__name__)


def apt_archive_cache(release: str) -> Path:
    """Where .debs are kept between builds (one directory per release)."""
    return cache_dir("apt-archives", release)


PRIVATE_MOUNTS = ["unshare", "--mount", "--propagation", "private", "--"]  # util-linux, Essential in Debian


def mmdebstrap_argv(spec: ImageSpec, rootdir: Path, apt_cache: Path) -> list[str]:
    """The mmdebstrap command for *spec* (pure).

    Downloaded .debs are synchronised in from and out to *apt_cache* (mmdebstrap's documented
    sync-in/sync-out pattern, with essential/unlink skipped so they survive until sync-out), so a
    build with a different task set downloads only what is new. mmdebstrap's cleanup then empties
    /var/cache/apt/archives in the image.
    """
    if any(c.isspace() for c in str(apt_cache)):
        raise ImgbuildError(f"apt cache path {apt_cache} contains whitespace, which mmdebstrap's sync hooks cannot take")
    cache = str(apt_cache)
    argv = [
        "mmdebstrap",
        "--mode=root",
        "--format=directory",
        f"--variant={variant(spec)}",
        "--components=main",
        "--skip=essential/unlink",
        "--include=" + ",".join(package_set(spec)),
        "--setup-hook=" + 'mkdir -p "$1"/var/cache/apt/archives/',
        f"--setup-hook=sync-in {cache} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {cache}",
    ]
    if spec.proxy:
        # Written to /etc/apt/apt.conf.d/99mmdebstrap; configure_rootfs removes it from the image.
        argv.append(f'--aptopt=Acquire::http::Proxy "{spec.proxy}"')
    argv += [spec.release, str(rootdir), spec.mirror]
    return argv


def bootstrap_env(epoch: int) -> dict[str, str]:
    """mmdebstrap's environment: SOURCE_DATE_EPOCH puts it and the maintainer scripts it runs into their
    reproducible modes (mmdebstrap then also removes logs and caches that differ from run to run)."""
    return {**os.environ, "SOURCE_DATE_EPOCH": str(epoch)}


def bootstrap(spec: ImageSpec, rootdir: Path, *, epoch: int, progress: Progress = NullProgress()) -> None:
    require_tool("mmdebstrap", "mmdebstrap")
    cache = apt_archive_cache(spec.release)
    # In a mount namespace of its own: the /dev, /proc and /sys mounts mmdebstrap makes in the chroot exist
    # only there, and the kernel removes them when its last process exits, however it ends (a SIGKILL of
    # imgbuild stops mmdebstrap with the SIGTERM of die_with_parent, too early for its own unmounting).
    argv = [*PRIVATE_MOUNTS, *mmdebstrap_argv(spec, rootdir, cache)]
    # Two builds syncing .debs out into one cache at once could leave a torn file for the next build's
    # sync-in: builds of a release take turns (they compete for the same CPUs and disk anyway).
    lock = cache.parent / f".{cache.name}.lock"
    waiting = f"image: waiting for another image build of {spec.release} to finish (they share the apt cache)"
    with exclusive_lock(lock, on_wait=lambda: progress.step(waiting)):
        run_streaming(argv, label="mmdebstrap", progress=progress, env=bootstrap_env(epoch))


def run_streaming(argv: list[str], *, label: str, progress: Progress, tail_lines: int = 40,
                  env: dict[str, str] | None = None) -> None:
    """Run *argv*, passing each output line to progress; on failure raise CommandFailed with the tail.

    (builder.proc.run captures output whole; mmdebstrap runs for a minute and its phases are the
    progress worth showing.)
    """
    log.debug("run: %s", quote(argv))
    tail: collections.deque[str] = collections.deque(maxlen=tail_lines)
    try:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
            env=env, start_new_session=True,  # its own process group: stopped whole (stop_group)
            preexec_fn=die_with_parent(),  # noqa: PLW1509 - only a prepared prctl runs in the child (see proc.py)
        )
    except FileNotFoundError as exc:
        raise CommandFailed(f"command not found: {argv[0]}") from exc
    assert proc.stdout is not None
    try:
        for line in proc.stdout:
            line = redact(line.rstrip())  # apt prints its proxy URL, credentials included
            if not line:
                continue
            tail.append(line)
            log.debug("%s: %s", label, line)
            if line.startswith(("I: ", "E: ", "W: ")):
                progress.step(f"{label}: {line[3:]}"[:150])
        rc = proc.wait()
    except BaseException:  # Ctrl-C, SIGTERM: stop mmdebstrap and everything it started, then go on unwinding
        stop_group(proc)
        raise
    if rc != 0:
        raise CommandFailed(f"command failed with exit status {rc}: {quote(argv)}", detail="\n".join(tail))


def stop_group(proc: subprocess.Popen[str], grace: float = 30.0) -> None:
    """SIGTERM to *proc*'s process group (mmdebstrap and the apt, dpkg and hooks it runs), then SIGKILL to
    whatever is left after *grace* seconds: when this returns nothing of it writes into the build tree."""
    pgid = proc.pid
    for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, sig)
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=0.2)
            try:
                os.killpg(pgid, 0)  # anyone left in the group (exited members are reaped quickly)?
            except ProcessLookupError:
                return
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=5)
