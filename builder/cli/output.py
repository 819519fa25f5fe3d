"""One place that prints: results as human text on stdout, or JSON with --json; progress on stderr.

Jobs (make, clone, release, template) report through an event sink: ``--json`` prints every event as one
JSON object per line on stdout (docs/events.md); otherwise events are drawn as progress on stderr and
``job_results`` prints each job's outcome, with a summary table when a run had several jobs.
"""

from __future__ import annotations

import json
import sys
import threading
from typing import Any, TextIO

from builder.pipeline.events import Event, EventSink, event
from builder.pipeline.jobs import JobResult, RunResult
from builder.progress import ConsoleProgress
from builder.secrets.redact import redact, redact_data


class JsonLines:
    """Every event as one JSON object per line."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._lock = threading.Lock()

    def emit(self, event: Event) -> None:
        line = json.dumps(redact_data(json.loads(json.dumps(event, default=str))), sort_keys=False)
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class ConsoleEvents:
    """Events drawn as progress: live on a terminal for one job; one prefixed line per stage, note and check
    when several jobs share the screen (their steps are in each job's log)."""

    def __init__(self, stream: TextIO, *, several: bool) -> None:
        self.stream = stream
        self.several = several
        self._lock = threading.Lock()
        self._views: dict[str, ConsoleProgress] = {}

    def _view(self, job: str) -> ConsoleProgress:
        view = self._views.get(job)
        if view is None:
            view = self._views[job] = ConsoleProgress(self.stream, live=False if self.several else None,
                                                      prefix=f"[{job}] " if self.several else "")
        return view

    def emit(self, event: Event) -> None:
        kind = event["event"]
        with self._lock:
            view = self._view(str(event.get("job", "")))
            if kind == "stage-start":
                view.begin_stage(event["stage"])
            elif kind == "stage-end":
                view.end_stage(event["ok"], event.get("detail", ""), seconds=event.get("seconds"),
                               reused=event.get("reused", False))
            elif kind == "note":
                view.note(event["text"])
            elif kind == "check" and self.several:
                view.note(f"check {event['check']}: {'ok' if event['ok'] else 'FAILED'}")
            elif kind == "step" and not self.several:
                view.step(event["text"])
            elif kind == "transfer" and not self.several:
                view.transfer(event["label"], event["done"], event.get("total"))
            elif kind == "result" and self.several:
                mark = "ok" if event["ok"] else f"FAILED: {event.get('error')}"
                self.stream.write(redact(f"[{event['job']}] {event['kind']} {mark} in {event['seconds']:.0f}s "
                                         f"(log: {event.get('log')})\n"))
                self.stream.flush()


class Output:
    def __init__(self, as_json: bool = False, stream: TextIO | None = None, err: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout
        self.err = err or sys.stderr

    def text(self, line: str = "") -> None:
        if not self.as_json:
            print(redact(line), file=self.stream)

    def data(self, payload: Any) -> None:
        """Emit the command's JSON result (only with --json)."""
        if self.as_json:
            json.dump(redact_data(json.loads(json.dumps(payload, default=str))), self.stream, indent=2, sort_keys=False)
            self.stream.write("\n")

    def table(self, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
        if self.as_json:
            return
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print(redact("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()), file=self.stream)

    # --- jobs ------------------------------------------------------------------------------------
    def events(self, jobs: int) -> EventSink:
        if self.as_json:
            return JsonLines(self.stream)
        return ConsoleEvents(self.err, several=jobs > 1)

    def job_results(self, run: RunResult) -> int:
        """Print how the jobs ended (text: one block per job, a summary table for several; JSON: the summary
        event closes the stream). Returns the exit status."""
        if self.as_json:
            JsonLines(self.stream).emit(event("summary", None, **run.as_dict()))
            return run.exit_code
        if len(run.jobs) == 1:
            self._one(run.jobs[0])
            return run.exit_code
        for job in run.jobs:
            if not job.ok:
                self._failure(job)
        self.table([summary_row(j) for j in run.jobs],
                   header=("RECIPE", "JOB", "STAGES RUN", "REUSED", "CHECKS", "DURATION", "RESULT"))
        failed = [j for j in run.jobs if not j.ok]
        self.text(f"{len(run.jobs) - len(failed)} of {len(run.jobs)} job(s) succeeded in {run.seconds:.0f}s "
                  f"(-j {run.parallel})" + (f"; failed: {', '.join(j.name for j in failed)}" if failed else ""))
        return run.exit_code

    def _failure(self, job: JobResult, *, named: bool = True) -> None:
        print(redact(f"imgbuild: error: {job.name + ': ' if named else ''}{job.error}"), file=self.err)
        for line in (job.detail or "").splitlines():
            print(redact(f"  {line}"), file=self.err)
        if job.report:
            print(f"imgbuild: report: {job.report}", file=self.err)
        if job.log:
            print(f"imgbuild: log: {job.log}", file=self.err)

    def _one(self, job: JobResult) -> None:
        if not job.ok:
            self._failure(job, named=False)
            return
        if job.kind == "release":
            self._release(job)
            return
        what = f"{job.vm.get('method', '')} " if job.kind == "clone" else ""
        if job.kind == "clone":
            what = f"{'linked' if job.vm.get('linked') else 'full'} clone of {job.vm.get('source', job.recipe)} "
        self.text(f"{job.name}: {what}verified on {job.target} in {job.seconds:.0f}s ({job.checks_passed}/"
                  f"{job.checks_total} checks passed)")
        self.text(f"  report: {job.report}")
        if job.changes:
            self.text(f"  image: {job.changes}")
        if job.keep:
            self.text(f"  it is running; reach it with:\n    {job.access.get('ssh', '?')}")
            for url in job.access.get("urls", []):
                self.text(f"    {url}")
            self.text(f"  remove it with: imgbuild destroy {job.name}")
        else:
            self.text(f"  it was shut down cleanly (state: {job.vm.get('state', '?')})")

    def _release(self, job: JobResult) -> None:
        rel = job.release
        self.text(f"{job.recipe}: released {rel.get('name')} on {job.target} in {job.seconds:.0f}s: latest now "
                  f"(a linked clone passed {job.checks_passed}/{job.checks_total} checks)")
        if rel.get("previous"):
            self.text(f"  previous latest: {rel['previous']} (kept as an older release)")
        if job.changes:
            self.text(f"  image: {job.changes}")
        self.text(f"  releases kept: {', '.join(rel.get('kept', [])) or '-'}")
        for name in rel.get("removed", []):
            self.text(f"  removed {name} (older than the newest kept)")
        for held in rel.get("held", []):
            self.text(f"  kept {held['name']}: {', '.join(held['held_by'])} depends on it")
        for name in (rel.get("cleaned") or {}).get("removed", []):
            self.text(f"  removed {name}: left by an interrupted release")
        self.text(f"  report: {job.report}")
        self.text(f"  clone it with: imgbuild clone {job.recipe} --name NAME")


def summary_row(job: JobResult) -> tuple[str, ...]:
    checks = f"{job.checks_passed}/{job.checks_total}" if job.checks_total else "-"
    result = "ok" if job.ok else ("interrupted" if job.interrupted else "FAILED")
    return (job.recipe if job.kind != "clone" else job.name, job.kind, ",".join(job.stages_run) or "-",
            ",".join(job.stages_reused) or "-", checks, f"{job.seconds:.0f}s", result)
