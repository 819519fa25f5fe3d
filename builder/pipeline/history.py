"""Run history: every job's report is also kept as ``out/NAME/history/STAMP-KIND.json`` (the newest K).

Names sort by time (UTC, to the microsecond), so the newest is last in a sorted listing. The page
(``imgbuild report --html``), ``status`` and "what changed since the previous build" read from here.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from pathlib import Path
from typing import Any

from builder.fsutil import part_path

DEFAULT_KEEP = 30
DIR = "history"


def record(job_dir: Path, report: Path, kind: str, *, keep: int = DEFAULT_KEEP) -> Path:
    """Copy *report* into *job_dir*/history/ and drop all but the newest *keep* entries."""
    folder = job_dir / DIR
    folder.mkdir(parents=True, exist_ok=True)
    stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest = folder / f"{stamp}-{kind}.json"
    with part_path(dest, mode=0o644) as tmp:
        shutil.copyfile(report, tmp)
        tmp.replace(dest)
    for old in entries(job_dir)[:-keep] if keep > 0 else []:
        old.unlink(missing_ok=True)
    return dest


def entries(job_dir: Path) -> list[Path]:
    """History files of one job directory, oldest first."""
    folder = job_dir / DIR
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.glob("*.json") if not p.name.startswith("."))


def load(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def runs(job_dir: Path, limit: int | None = None) -> list[dict[str, Any]]:
    """The recorded reports of one job directory, newest first."""
    found = []
    for path in reversed(entries(job_dir)):
        data = load(path)
        if data is not None:
            data["_history_file"] = str(path)
            found.append(data)
        if limit is not None and len(found) >= limit:
            break
    return found
