"""PVE worker tasks: UPIDs, asynchronous completion, status and log.

A call that starts work returns a UPID at once; the work runs in a thread and its outcome shows
only in the task status (``exitstatus`` "OK", "WARNINGS: n" or the error message) and in its log,
whose last line is ``TASK OK`` / ``TASK WARNINGS: n`` / ``TASK ERROR: <message>`` as on PVE.
"""

from __future__ import annotations

import itertools
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


class TaskFailed(Exception):
    """Raised by a task body: the task ends with this message as its exitstatus."""


@dataclass
class TaskBehaviour:
    """How a task ends, as decided by fault injection before it starts."""

    hang: bool = False  # never finishes (outlives any deadline) until stopped
    fail: str | None = None  # fail with this message instead of doing the work
    log: tuple[str, ...] = ()  # extra log lines written before failing
    extra_delay: float = 0.0


@dataclass
class Task:
    upid: str
    node: str
    pid: int
    pstart: int
    starttime: int
    type: str
    id: str
    user: str
    status: str = "running"
    exitstatus: str | None = None
    endtime: int | None = None
    lines: list[tuple[float, str]] = field(default_factory=list)
    warnings: int = 0
    stop_requested: threading.Event = field(default_factory=threading.Event)
    done: threading.Event = field(default_factory=threading.Event)

    def log(self, text: str) -> None:
        for line in text.split("\n"):
            self.lines.append((time.time(), line))

    def warn(self, text: str) -> None:
        self.warnings += 1
        self.log(f"WARN: {text}")

    def wait_or_stop(self, seconds: float) -> None:
        """Sleep like a real worker would; raise if the task was stopped meanwhile."""
        if self.stop_requested.wait(max(0.0, seconds)):
            raise TaskFailed("interrupted by signal")

    def status_dict(self) -> dict[str, Any]:
        user, _, tokenid = self.user.partition("!")
        out: dict[str, Any] = {
            "upid": self.upid,
            "node": self.node,
            "pid": self.pid,
            "pstart": self.pstart,
            "starttime": self.starttime,
            "type": self.type,
            "id": self.id,
            "user": user,
            "status": self.status,
        }
        if tokenid:
            out["tokenid"] = tokenid
        if self.status == "stopped":
            out["exitstatus"] = self.exitstatus
        return out


class TaskManager:
    def __init__(self, node: str, duration: float, lock: threading.RLock) -> None:
        self.node = node
        self.duration = duration  # how long every task runs at least (seconds)
        self.lock = lock
        self.tasks: dict[str, Task] = {}
        self._pids = itertools.count(os.getpid() * 7 % 0x3FFFFF + 1000)
        self._threads: list[threading.Thread] = []

    def start(
        self,
        kind: str,
        id: str,
        user: str,
        body: Callable[[Task], None],
        behaviour: TaskBehaviour | None = None,
        on_error: Callable[[Task, str], None] | None = None,
        node: str | None = None,
    ) -> Task:
        """Start *body* as a worker task and return it (its ``upid`` is the API's answer).

        *body* runs without the state lock held; it takes ``self.lock`` around state changes.
        *on_error* undoes a half-done change (e.g. removes the config of a VM that failed to create).
        """
        behaviour = behaviour or TaskBehaviour()
        pid = next(self._pids)
        now = int(time.time())
        pstart = int(time.monotonic() * 100) & 0xFFFFFFFF
        node = node or self.node  # the node the worker runs on (a cluster's tasks run on many)
        upid = f"UPID:{node}:{pid:08X}:{pstart:08X}:{now:08X}:{kind}:{id}:{user}:"
        task = Task(upid, node, pid, pstart, now, kind, id, user)
        self.tasks[upid] = task

        def run() -> None:
            error: str | None = None
            try:
                task.wait_or_stop(self.duration + behaviour.extra_delay)
                if behaviour.hang:
                    task.stop_requested.wait()
                    raise TaskFailed("interrupted by signal")
                if behaviour.fail is not None:
                    for line in behaviour.log:
                        task.log(line)
                    raise TaskFailed(behaviour.fail)
                body(task)
            except TaskFailed as exc:
                error = str(exc)
            except Exception as exc:  # a bug in the simulator shows in the task, like a Perl die
                error = f"pvesim internal error: {type(exc).__name__}: {exc}"
            if error is not None and on_error is not None:
                try:
                    on_error(task, error)
                except Exception as exc:  # pragma: no cover - cleanup must not hide the error
                    task.log(f"cleanup failed: {exc}")
            with self.lock:
                if error is not None:
                    first = error.rstrip("\n").split("\n")[0]
                    task.log(f"TASK ERROR: {first}")
                    task.exitstatus = first
                elif task.warnings:
                    task.log(f"TASK WARNINGS: {task.warnings}")
                    task.exitstatus = f"WARNINGS: {task.warnings}"
                else:
                    task.log("TASK OK")
                    task.exitstatus = "OK"
                task.endtime = int(time.time())
                task.status = "stopped"
            task.done.set()

        thread = threading.Thread(target=run, name=f"pvesim-task-{kind}-{id}", daemon=True)
        self._threads.append(thread)
        thread.start()
        return task

    def get(self, upid: str) -> Task | None:
        return self.tasks.get(upid)

    def running(self) -> list[Task]:
        return [t for t in self.tasks.values() if t.status == "running"]

    def stop_all(self, timeout: float = 5.0) -> None:
        for task in list(self.tasks.values()):
            task.stop_requested.set()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
