"""Run named stages: time each, show it on the progress display, record it in the report."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator

from builder.errors import ImgbuildError
from builder.pipeline.report import Report, StageRecord
from builder.progress import NullProgress, Progress, StageProgress


class Stages:
    def __init__(self, report: Report, progress: Progress | None = None) -> None:
        self.report = report
        self.progress: Progress = progress or NullProgress()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[StageRecord]:
        record = StageRecord(name=name, seconds=0.0, ok=False)
        if isinstance(self.progress, StageProgress):
            self.progress.begin_stage(name)
        start = time.monotonic()
        try:
            yield record
            record.ok = True
        except ImgbuildError as exc:
            record.detail = record.detail or exc.message
            raise
        except Exception as exc:
            record.detail = record.detail or f"{type(exc).__name__}: {exc}"
            raise
        except KeyboardInterrupt:  # Ctrl-C, SIGTERM (builder.errors.Terminated) or a stopped multi-job run
            record.detail = record.detail or "interrupted"
            raise
        finally:
            record.seconds = round(time.monotonic() - start, 2)
            self.report.stages.append(record)
            if isinstance(self.progress, StageProgress):
                self.progress.end_stage(record.ok, record.detail, seconds=record.seconds, reused=record.reused)
