"""Run jobs (make, clone, release): one path for one job or many, one at a time or several in parallel.

Each job runs in a worker thread with its own target connection, its own log (``out/NAME/KIND.log``) and
its own report; it ends in a typed ``JobResult``, announced as a ``result`` event. One failing job never
stops the others. An interrupt (Ctrl-C, SIGTERM as ``builder.errors.Terminated``, or a KeyboardInterrupt
raised inside any job) stops every job: jobs not yet started never start, running ones get the same
exception raised inside their thread, so their own cleanup (``make``'s settle, a release's rollback) runs
as it would for a single job; then the interrupt is raised again in the caller's thread.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.errors import ImgbuildError, Terminated
from builder.outdir import recipe_dir
from builder.pipeline import history
from builder.pipeline.events import EventSink, JobProgress
from builder.pipeline.report import Report
from builder.recipe.model import Recipe
from builder.targets.base import Target

JobKind = Literal["make", "clone", "release"]
TargetFactory = Callable[[], Target]


@dataclass
class Job:
    """One unit of work: *body* does it on a target and returns its report (raising on failure after
    writing the report to ``out/NAME/report.json``)."""

    kind: JobKind
    name: str  # out/NAME/ holds the job's report and log
    recipe: Recipe
    body: Callable[[Target, JobProgress], Report]
    keep: bool = False  # make/clone --keep: the VM is left running
    report_name: str = "report.json"  # a release reports beside the recipe's make: release.json


@dataclass
class JobResult:
    kind: JobKind
    name: str
    recipe: str
    target: str
    ok: bool
    seconds: float
    error: str | None = None
    detail: str = ""
    exit_code: int = 0
    interrupted: bool = False
    stages_run: list[str] = field(default_factory=list)
    stages_reused: list[str] = field(default_factory=list)
    checks_passed: int = 0
    checks_total: int = 0
    failed_checks: list[str] = field(default_factory=list)
    report: str | None = None  # path of report.json
    log: str | None = None
    keep: bool = False
    vm: dict[str, Any] = field(default_factory=dict)
    access: dict[str, Any] = field(default_factory=dict)
    changes: str | None = None  # what changed in the image since the previous build of this recipe
    release: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class RunResult:
    jobs: list[JobResult]
    seconds: float
    parallel: int

    @property
    def ok(self) -> bool:
        return all(j.ok for j in self.jobs)

    @property
    def exit_code(self) -> int:
        failed = [j for j in self.jobs if not j.ok]
        if not failed:
            return 0
        return 2 if all(j.exit_code == 2 for j in failed) else 1

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "seconds": self.seconds, "parallel": self.parallel,
                "jobs": [j.as_dict() for j in self.jobs]}


def result_from_report(job: Job, data: dict[str, Any], *, seconds: float) -> JobResult:
    stages = [s for s in data.get("stages") or [] if isinstance(s, dict)]
    checks = [c for c in data.get("checks") or [] if isinstance(c, dict)]
    return JobResult(
        kind=job.kind, name=job.name, recipe=job.recipe.name, target=str(data.get("target", "?")),
        ok=bool(data.get("ok")), seconds=seconds, error=data.get("error"),
        stages_run=[s["name"] for s in stages if not s.get("reused")],
        stages_reused=[s["name"] for s in stages if s.get("reused")],
        checks_passed=sum(1 for c in checks if c.get("ok")), checks_total=len(checks),
        failed_checks=[c["check"] for c in checks if not c.get("ok")],
        keep=job.keep, vm=dict(data.get("vm") or {}), access=dict(data.get("access") or {}),
        changes=(data.get("changes") or {}).get("summary"), release=dict(data.get("release") or {}),
    )


class Runner:
    def __init__(self, jobs: list[Job], *, open_target: TargetFactory, sink: EventSink, out_root: Path,
                 parallel: int = 1, history_keep: int = history.DEFAULT_KEEP) -> None:
        if parallel < 1:
            raise ValueError("parallel must be at least 1")
        self.jobs = jobs
        self.open_target = open_target
        self.sink = sink
        self.out_root = out_root
        self.parallel = min(parallel, max(1, len(jobs)))
        self.history_keep = history_keep
        self.results: dict[int, JobResult] = {}
        self._lock = threading.Lock()
        self._next = 0
        self._stopping: BaseException | None = None  # the interrupt that stops the run
        self._running: dict[int, int] = {}  # thread ident -> job index, while the job's body runs
        self._signalled: set[int] = set()

    # --- the caller's thread ---------------------------------------------------------------------
    def run(self) -> RunResult:
        start = time.monotonic()
        if self.parallel == 1:
            self._one_at_a_time()
        else:
            self._in_parallel()
        if self._stopping is not None:  # a job was interrupted from inside: the run stops as a whole
            raise self._stopping
        results = [self.results.get(i) or JobResult(job.kind, job.name, job.recipe.name, target="?", ok=False,
                                                    seconds=0.0, error="not run", exit_code=1)
                   for i, job in enumerate(self.jobs)]
        return RunResult(results, round(time.monotonic() - start, 2), self.parallel)

    def _one_at_a_time(self) -> None:
        """-j 1: each job in the caller's thread, so Ctrl-C and SIGTERM land where they would without a runner
        (a blocking wait, a child process: Python's own handling applies); the jobs after it never start."""
        for index, job in enumerate(self.jobs):
            self.results[index] = self._run_one(index, job)
            if self._stopping is not None:
                return

    def _in_parallel(self) -> None:
        # Each worker sets its own event when it ends. Not Thread.join: a join interrupted by Ctrl-C can mark a
        # live thread as ended (CPython gh-90882), and the cleanup of its job would be abandoned.
        done = [threading.Event() for _ in range(self.parallel)]
        workers = [threading.Thread(target=self._work, args=(d,), name=f"imgbuild-job-{i}", daemon=True)
                   for i, d in enumerate(done)]
        for w in workers:
            w.start()
        try:
            while not all(d.is_set() for d in done):
                for d in done:
                    d.wait(0.2)
                if self._stopping is not None:
                    self._stop_all(self._stopping)
        except KeyboardInterrupt as exc:
            self._stop_all(exc)
            for d in done:  # their cleanup runs now; a second Ctrl-C abandons it (daemon threads)
                while not d.wait(0.5):
                    pass
            raise

    def _stop_all(self, exc: BaseException) -> None:
        """Raise *exc*'s class in every running job's thread, once; stop this process's child processes (a job
        waiting for one, an image build, say, sees it end and gets the exception then)."""
        with self._lock:
            if self._stopping is None:
                self._stopping = exc
            fresh = [ident for ident in self._running if ident not in self._signalled]
            for ident in fresh:
                self._signalled.add(ident)
                _raise_in_thread(ident, type(exc))
        if fresh:
            _signal_children(signal.SIGTERM if isinstance(exc, Terminated) else signal.SIGINT)

    # --- worker threads --------------------------------------------------------------------------
    def _work(self, done: threading.Event) -> None:
        try:
            self._work_through()
        finally:
            done.set()

    def _work_through(self) -> None:
        while True:
            with self._lock:
                if self._stopping is not None or self._next >= len(self.jobs):
                    return
                index = self._next
                self._next += 1
            job = self.jobs[index]
            try:
                self.results[index] = self._run_one(index, job)
            except KeyboardInterrupt as exc:  # landed outside the job's body: still stop the run
                with self._lock:
                    self._stopping = self._stopping or exc
                return
            except Exception as exc:  # noqa: BLE001 - the runner's own bug: this job fails, the others go on
                self.results[index] = JobResult(job.kind, job.name, job.recipe.name, target="?", ok=False,
                                                seconds=0.0, error=f"internal error: {type(exc).__name__}: {exc}",
                                                detail=traceback.format_exc(), exit_code=1)

    def _run_one(self, index: int, job: Job) -> JobResult:
        try:  # a real directory of ours, 0700: a symlink or an unusable --out-dir is refused before any write
            job_dir = recipe_dir(self.out_root, job.name)
        except ImgbuildError as exc:
            refused = JobResult(job.kind, job.name, job.recipe.name, target="?", ok=False, seconds=0.0,
                                error=exc.message, detail=exc.detail, exit_code=exc.exit_code)
            JobProgress(job.name, self.sink).emit("result", _result_line(refused), **refused.as_dict())
            return refused
        log = job_dir / f"{job.kind}.log"
        report_path = job_dir / job.report_name
        progress = JobProgress(job.name, self.sink, log)
        progress.emit("job-start", f"{job.kind} {job.name} (recipe {job.recipe.name})", kind=job.kind,
                      recipe=job.recipe.name, log=str(log))
        start = time.monotonic()
        wall = time.time()
        target: Target | None = None
        result: JobResult | None = None
        interrupted: BaseException | None = None
        try:
            try:
                with self._lock:
                    if self._stopping is not None:
                        raise self._stopping
                    self._running[threading.get_ident()] = index
                target = self.open_target()
                job.body(target, progress)
            finally:
                with self._lock:
                    self._running.pop(threading.get_ident(), None)
        except ImgbuildError as exc:
            result = self._failed(job, report_path, wall, start, exc.message, exc.detail, exc.exit_code)
        except KeyboardInterrupt as exc:
            interrupted = exc
            result = self._failed(job, report_path, wall, start, "interrupted", "", 130)
            result.interrupted = True
        except Exception as exc:  # noqa: BLE001 - a bug: this job fails, the others go on; the traceback goes to the log
            progress.emit("note", traceback.format_exc(), text=f"internal error: {type(exc).__name__}: {exc}")
            result = self._failed(job, report_path, wall, start, f"internal error: {type(exc).__name__}: {exc}",
                                  f"see {log}", 1)
        finally:
            close = getattr(target, "close", None)
            if callable(close):
                close()
        if result is None:
            result = result_from_report(job, _read_report(report_path, wall) or {"ok": True},
                                        seconds=round(time.monotonic() - start, 2))
        result.report = str(report_path) if report_path.exists() else None
        result.log = str(log)
        if result.report:
            history.record(job_dir, report_path, job.kind, keep=self.history_keep)
        progress.emit("result", _result_line(result), **result.as_dict())
        progress.close()
        if interrupted is not None:
            with self._lock:
                self._stopping = self._stopping or interrupted
        return result

    def _failed(self, job: Job, report_path: Path, wall: float, start: float, message: str, detail: str,
                exit_code: int) -> JobResult:
        data = _read_report(report_path, wall)
        seconds = round(time.monotonic() - start, 2)
        if data is not None:
            result = result_from_report(job, data, seconds=seconds)
        else:  # it failed before writing a report (e.g. the target could not be reached)
            result = JobResult(job.kind, job.name, job.recipe.name, target="?", ok=False, seconds=seconds)
        result.ok = False
        result.error = message
        result.detail = detail
        result.exit_code = exit_code
        return result


def _read_report(path: Path, since: float) -> dict[str, Any] | None:
    """report.json when this run of the job wrote it (not a report left by an earlier run)."""
    try:
        if path.stat().st_mtime < since - 1:
            return None
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _result_line(result: JobResult) -> str:
    if result.ok:
        return f"{result.kind} {result.name}: ok in {result.seconds:.0f}s"
    return f"{result.kind} {result.name}: FAILED in {result.seconds:.0f}s: {result.error}"


def _signal_children(sig: int) -> None:
    """Send *sig* to this process's direct children (QEMU daemonizes: its own cleanup stops it)."""
    me = os.getpid()
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        if ppid == me:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(int(entry.name), sig)


def _raise_in_thread(ident: int, exc_type: type[BaseException]) -> None:
    """Raise *exc_type* inside thread *ident* at its next Python instruction (a blocking call returns
    first: the pipeline's waits poll in short sleeps)."""
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(exc_type))


def run_jobs(jobs: list[Job], *, open_target: TargetFactory, sink: EventSink, out_root: Path, parallel: int = 1,
             history_keep: int = history.DEFAULT_KEEP) -> RunResult:
    return Runner(jobs, open_target=open_target, sink=sink, out_root=out_root, parallel=parallel,
                  history_keep=history_keep).run()
