"""Run imgbuild's CLI (``main``) in a forked child of the test process, signal it, reap it.

A fork keeps what the test set up in-process (a simulator's stubs, monkeypatched golden images and
checks), yet the child is a process of its own: its ``main`` installs the real SIGTERM handler and
it gets a real signal, as systemd or CI would send.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Child:
    pid: int
    log: Path
    status: int | None = None

    def signal(self, sig: int) -> None:
        os.kill(self.pid, sig)

    def wait(self, timeout: float = 120) -> int:
        """The child's exit status (128+N when a signal N killed it)."""
        deadline = time.monotonic() + timeout
        while self.status is None:
            pid, raw = os.waitpid(self.pid, os.WNOHANG)
            if pid:
                self.status = os.waitstatus_to_exitcode(raw)
                if self.status < 0:
                    self.status = 128 - self.status
                break
            if time.monotonic() > deadline:
                os.kill(self.pid, signal.SIGKILL)
                os.waitpid(self.pid, 0)
                raise AssertionError(f"imgbuild did not exit within {timeout:.0f}s:\n{self.output()}")
            time.sleep(0.05)
        return self.status

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def fork_main(argv: list[str], log: Path) -> Child:
    """Start ``builder.cli.main.main(argv)`` in a child; its stdout and stderr go to *log*."""
    from builder.cli.main import main

    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            # pytest's capture objects write elsewhere: the child's streams are its fds 1 and 2
            sys.stdout = open(1, "w", buffering=1, closefd=False)
            sys.stderr = open(2, "w", buffering=1, closefd=False)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            code = main(argv)
        except BaseException as exc:
            print(f"child: {type(exc).__name__}: {exc}", file=sys.stderr)
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return Child(pid, log)


def poll(what: str, condition: Callable[[], object], timeout: float = 60, interval: float = 0.05) -> object:
    """Wait for *condition* to return something true; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)
