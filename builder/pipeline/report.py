"""report.json: what a make did (stages with timings, checks with results, artifacts with hashes, access)."""

from __future__ import annotations

import datetime as dt
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.fsutil import write_atomic
from builder.secrets.redact import redact_data


@dataclass
class StageRecord:
    name: str
    seconds: float
    ok: bool
    detail: str = ""
    reused: bool = False  # the stage found its result already there (a cached image, an up-to-date VM)


@dataclass
class Report:
    recipe: str
    target: str
    method: str
    started: str = field(default_factory=lambda: dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    finished: str | None = None
    ok: bool = False
    error: str | None = None
    stages: list[StageRecord] = field(default_factory=list)
    checks: list[dict[str, Any]] = field(default_factory=list)
    artifacts: list[dict[str, Any]] = field(default_factory=list)
    vm: dict[str, Any] = field(default_factory=dict)
    access: dict[str, Any] = field(default_factory=dict)
    cache: dict[str, Any] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)  # the image's packages against the previous build
    release: dict[str, Any] = field(default_factory=dict)  # release jobs: names, labels moved, pruning
    _t0: float = field(default_factory=time.monotonic, repr=False)

    def add_artifact(self, name: str, path: Path, sha256: str, size: int, **extra: Any) -> None:
        self.artifacts.append({"name": name, "path": str(path), "sha256": sha256, "size": size, **extra})

    def finish(self, ok: bool, error: str | None = None) -> None:
        self.ok = ok
        self.error = error
        self.finished = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")

    @property
    def seconds(self) -> float:
        return round(time.monotonic() - self._t0, 2)

    def as_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("_t0")
        data["seconds"] = self.seconds
        data["failed_checks"] = [c["check"] for c in self.checks if not c["ok"]]
        return data

    def write(self, path: Path) -> Path:
        write_atomic(path, json.dumps(redact_data(self.as_dict()), indent=2) + "\n")
        return path
