"""Progress reporting for long work, behind one small interface.

Library code takes a ``Progress`` and calls ``step``/``note``/``transfer``; the CLI decides whether it
is drawn live on a terminal (one redrawn status line) or logged line by line (CI, pipes).
``NullProgress`` is the default for library callers and tests.
"""

from __future__ import annotations

import sys
import time
from typing import Protocol, TextIO, runtime_checkable

from builder.secrets.redact import redact


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


class Progress(Protocol):
    def step(self, text: str) -> None:
        """A new step inside the current stage (e.g. 'installer: netcfg')."""

    def note(self, text: str) -> None:
        """A line worth keeping in the log (a warning, a decision)."""

    def transfer(self, label: str, done: int, total: int | None) -> None:
        """Bytes moved so far for a download or upload."""


@runtime_checkable
class StageProgress(Protocol):
    """A Progress that also hears where stages begin and end (the console display, the job event stream)."""

    def begin_stage(self, name: str) -> None: ...

    def end_stage(self, ok: bool, summary: str = "", *, seconds: float | None = None,
                  reused: bool = False) -> None: ...


class NullProgress:
    def step(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def transfer(self, label: str, done: int, total: int | None) -> None:
        pass


class ConsoleProgress:
    """Stage-aware progress on stderr. Live (redrawn) on a TTY, plain lines otherwise."""

    def __init__(self, stream: TextIO | None = None, live: bool | None = None, prefix: str = "") -> None:
        self.stream = stream or sys.stderr
        self.live = self.stream.isatty() if live is None else live
        self.prefix = prefix  # "[web-server] " when several jobs share the stream
        self._stages: list[tuple[str, float]] = []  # stages nest: a release runs a make inside its stage
        self._last_line = ""
        self._last_transfer = 0.0
        self._transfer_start: dict[str, tuple[float, int]] = {}

    def begin_stage(self, name: str) -> None:
        self._clear()
        self.stream.write(redact(f"{self.prefix}{'  ' * len(self._stages)}==> {name}\n"))
        self._stages.append((name, time.monotonic()))
        self.stream.flush()

    def end_stage(self, ok: bool, summary: str = "", *, seconds: float | None = None,
                  reused: bool = False) -> None:
        self._clear()
        name, started = self._stages.pop() if self._stages else ("", time.monotonic())
        elapsed = time.monotonic() - started if seconds is None else seconds
        mark = ("reused" if reused else "ok") if ok else "FAILED"
        extra = f": {summary}" if summary else ""
        self.stream.write(redact(f"{self.prefix}{'  ' * len(self._stages)}    {name} {mark} in {elapsed:.1f}s{extra}\n"))
        self.stream.flush()

    def _elapsed(self) -> str:
        now = time.monotonic()  # read once: outside a stage the clock starts now, at 0.0s (never -0.0s)
        return f"{now - (self._stages[-1][1] if self._stages else now):6.1f}s"

    def _status(self, text: str) -> None:
        text = redact(text)
        if self.live:
            line = f"{self.prefix}    [{self._elapsed()}] {text}"[:160]
            pad = max(0, len(self._last_line) - len(line))
            self.stream.write("\r" + line + " " * pad)
            self._last_line = line
        else:
            self.stream.write(f"{self.prefix}    [{self._elapsed()}] {text}\n")
        self.stream.flush()

    def _clear(self) -> None:
        if self.live and self._last_line:
            self.stream.write("\r" + " " * len(self._last_line) + "\r")
            self._last_line = ""

    def step(self, text: str) -> None:
        self._status(text)

    def note(self, text: str) -> None:
        self._clear()
        self.stream.write(redact(f"{self.prefix}    {text}\n"))
        self.stream.flush()

    def transfer(self, label: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        start = self._transfer_start.setdefault(label, (now, done))
        finished = total is not None and done >= total
        # Live: redraw at most 10 times a second; plain: a line every 5 s and at the end.
        interval = 0.1 if self.live else 5.0
        if not finished and now - self._last_transfer < interval:
            return
        self._last_transfer = now
        rate = (done - start[1]) / max(now - start[0], 1e-6)
        if total:
            text = f"{label}: {human_bytes(done)} / {human_bytes(total)} ({100 * done / total:.0f}%), {human_bytes(rate)}/s"
        else:
            text = f"{label}: {human_bytes(done)}, {human_bytes(rate)}/s"
        self._status(text)
        if finished:
            self._transfer_start.pop(label, None)
