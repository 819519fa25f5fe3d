"""The job event stream: what a running job reports, as data.

Pipeline code keeps calling ``Progress.step/note/transfer`` (and ``Stages`` calls ``begin_stage`` /
``end_stage``); a ``JobProgress`` turns each call into an event (a dict, schema in docs/events.md),
writes it as a line to the job's own log (``out/NAME/make.log``) and hands it to an ``EventSink``: the
CLI's renderer, which prints it as text or, with ``--json``, as one JSON object per line.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any, Protocol

from builder.progress import human_bytes
from builder.secrets.redact import redact

EVENT_VERSION = 1
TRANSFER_INTERVAL = 2.0  # seconds between transfer events for one label (the last one always goes out)

Event = dict[str, Any]


class EventSink(Protocol):
    def emit(self, event: Event) -> None:
        """Show or record *event*. Called from job threads: implementations serialise themselves."""


class NullSink:
    def emit(self, event: Event) -> None:
        pass


class CollectSink:
    """Keeps every event (tests, and callers that want the stream as a list)."""

    def __init__(self) -> None:
        self.events: list[Event] = []
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        with self._lock:
            self.events.append(event)


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(name: str, job: str | None, /, **fields: Any) -> Event:
    head: Event = {"v": EVENT_VERSION, "time": now_iso(), "event": name}
    if job is not None:
        head["job"] = job
    return {**head, **fields}


class JobProgress:
    """The Progress (and StageProgress) of one job: every call becomes an event and a log line."""

    def __init__(self, job: str, sink: EventSink, log: Path | None = None) -> None:
        self.job = job
        self.sink = sink
        self.log_path = log
        self._log: IO[str] | None = None
        if log is not None:
            log.parent.mkdir(parents=True, exist_ok=True)
            self._log = log.open("w", encoding="utf-8")  # closed by close(); one log per run of the job
        self._stages: list[tuple[str, float]] = []  # stages nest: a release runs a make inside its stage
        self._last_transfer: dict[str, float] = {}

    # --- Progress --------------------------------------------------------------------------------
    def step(self, text: str) -> None:
        self._emit(event("step", self.job, stage=self._stage, text=text), f"    {text}")

    def note(self, text: str) -> None:
        self._emit(event("note", self.job, stage=self._stage, text=text), f"    {text}")

    def transfer(self, label: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        finished = total is not None and done >= total
        if not finished and now - self._last_transfer.get(label, -1e9) < TRANSFER_INTERVAL:
            return
        self._last_transfer[label] = now
        of = f" / {human_bytes(total)}" if total else ""
        self._emit(event("transfer", self.job, stage=self._stage, label=label, done=done, total=total),
                   f"    {label}: {human_bytes(done)}{of}")

    # --- StageProgress ---------------------------------------------------------------------------
    @property
    def _stage(self) -> str:
        return self._stages[-1][0] if self._stages else ""

    def begin_stage(self, name: str) -> None:
        self._stages.append((name, time.monotonic()))
        self._emit(event("stage-start", self.job, stage=name, depth=len(self._stages) - 1),
                   f"{'  ' * (len(self._stages) - 1)}==> {name}")

    def end_stage(self, ok: bool, summary: str = "", *, seconds: float | None = None,
                  reused: bool = False) -> None:
        name, started = self._stages[-1] if self._stages else ("", time.monotonic())
        seconds = round(time.monotonic() - started, 2) if seconds is None else seconds
        mark = ("reused" if reused else "ok") if ok else "FAILED"
        self._emit(event("stage-end", self.job, stage=name, ok=ok, seconds=seconds, reused=reused, detail=summary,
                         depth=max(0, len(self._stages) - 1)),
                   f"{'  ' * max(0, len(self._stages) - 1)}    {name} {mark} in {seconds:.1f}s"
                   f"{': ' + summary if summary else ''}")
        if self._stages:
            self._stages.pop()

    # --- the rest of a job's story ---------------------------------------------------------------
    def checks(self, outcomes: Iterable[dict[str, Any]]) -> None:
        for outcome in outcomes:
            mark = "ok" if outcome.get("ok") else "FAILED"
            self._emit(event("check", self.job, **outcome), f"    check {outcome.get('check')}: {mark}")

    def emit(self, kind: str, line: str, /, **fields: Any) -> None:
        """Any other event of this job (job-start, result); *line* goes to the log."""
        self._emit(event(kind, self.job, **fields), line)

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
            self._log = None

    def _emit(self, ev: Event, line: str) -> None:
        if self._log is not None:
            stamp = dt.datetime.now().strftime("%H:%M:%S")
            self._log.write(redact(f"{stamp} {line}\n"))
            self._log.flush()
        self.sink.emit(ev)
