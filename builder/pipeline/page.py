"""``imgbuild report --html``: the run history as one self-contained static page.

``collect`` reads ``OUT/*/history/`` (and the desktop screenshot a recipe's last run left); ``render_page``
is pure: rows in, HTML out (inline CSS, images as data: URIs, no script, nothing fetched).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from builder.pipeline import history

RUNS_SHOWN = 10
SCREENSHOT_MAX_BYTES = 4 << 20


@dataclass
class Run:
    kind: str
    started: str
    ok: bool
    error: str | None
    checks_passed: int
    checks_total: int
    seconds: float
    stages: list[tuple[str, float, bool]]  # name, seconds, reused
    changes: str | None
    release: str | None

    @classmethod
    def from_report(cls, data: dict[str, Any], kind: str) -> Run:
        checks = [c for c in data.get("checks") or [] if isinstance(c, dict)]
        stages = [(str(s.get("name")), float(s.get("seconds") or 0), bool(s.get("reused")))
                  for s in data.get("stages") or [] if isinstance(s, dict)]
        return cls(kind=kind, started=str(data.get("started") or ""), ok=bool(data.get("ok")),
                   error=data.get("error"), checks_passed=sum(1 for c in checks if c.get("ok")),
                   checks_total=len(checks), seconds=float(data.get("seconds") or 0), stages=stages,
                   changes=(data.get("changes") or {}).get("summary"),
                   release=(data.get("release") or {}).get("name"))


@dataclass
class Row:
    name: str
    runs: list[Run] = field(default_factory=list)  # newest first
    screenshot: bytes | None = None

    @property
    def newest(self) -> str:
        return self.runs[0].started if self.runs else ""


def collect(out_root: Path, limit: int = RUNS_SHOWN) -> list[Row]:
    """A row per job directory with history, most recently run first."""
    rows = []
    for folder in sorted(p.parent for p in out_root.glob(f"*/{history.DIR}")):
        row = Row(folder.name)
        for data in history.runs(folder, limit):
            kind = Path(data.get("_history_file", "")).stem.rsplit("-", 1)[-1]
            row.runs.append(Run.from_report(data, kind))
        if not row.runs:
            continue
        shot = folder / "screenshot.png"
        if shot.is_file() and shot.stat().st_size <= SCREENSHOT_MAX_BYTES:
            row.screenshot = shot.read_bytes()
        rows.append(row)
    return sorted(rows, key=lambda r: r.newest, reverse=True)


CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; margin: 0 0 .2em; }
p.meta { color: #666; margin: 0 0 1em; }
table.recipes { border-collapse: collapse; width: 100%; }
table.recipes > tbody > tr > td, table.recipes > thead > tr > th { border-top: 1px solid #ddd; padding: .5em;
  vertical-align: top; text-align: left; }
td.name { font-weight: 600; white-space: nowrap; }
td.shot img { width: 160px; border: 1px solid #bbb; display: block; }
ol.runs { list-style: none; margin: 0; padding: 0; display: flex; flex-wrap: wrap; gap: .5em; }
ol.runs li { border: 1px solid #ccc; border-left: 6px solid #2a2; border-radius: 4px; padding: .3em .6em;
  min-width: 13em; max-width: 22em; }
ol.runs li.failed { border-left-color: #c22; background: #fff5f5; }
.result { font-weight: 600; }
li.failed .result { color: #c22; }
.when, .stages { color: #666; font-size: .85em; }
.changes { font-size: .85em; }
.error { font-size: .85em; color: #a11; }
"""


def render_page(rows: list[Row], *, generated: str | None = None, title: str = "imgbuild runs") -> str:
    generated = generated or dt.datetime.now(dt.UTC).isoformat(timespec="seconds").replace("+00:00", "Z")
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="meta">{len(rows)} recipe(s), newest run first; generated {_e(generated)}</p>']
    if not rows:
        body.append('<p class="empty">No runs recorded yet: run <code>imgbuild make</code> first.</p>')
    else:
        body.append('<table class="recipes"><thead><tr><th>Recipe</th><th>Desktop</th><th>Last runs (newest first)'
                    '</th></tr></thead><tbody>')
        body += [_row(r) for r in rows]
        body.append("</tbody></table>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<meta name=\"viewport\" content=\"width=device-width\"><title>{_e(title)}</title>"
            f"<style>{CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _row(row: Row) -> str:
    shot = ""
    if row.screenshot:
        data = base64.b64encode(row.screenshot).decode()
        shot = f'<img alt="desktop of {_e(row.name)}" src="data:image/png;base64,{data}">'
    runs = "".join(_run(r) for r in row.runs)
    return (f'<tr class="recipe" data-recipe="{_e(row.name)}"><td class="name">{_e(row.name)}</td>'
            f'<td class="shot">{shot}</td><td><ol class="runs">{runs}</ol></td></tr>')


def _run(run: Run) -> str:
    mark = "ok" if run.ok else "FAILED"
    checks = f"{run.checks_passed}/{run.checks_total} checks" if run.checks_total else "no checks run"
    stages = ", ".join(f"{n} {s:.0f}s{' (reused)' if reused else ''}" for n, s, reused in run.stages)
    parts = [f'<span class="result">{run.kind} {mark}</span> in {run.seconds:.0f}s, <span class="checks">'
             f"{checks}</span>",
             f'<div class="when">{_e(run.started.replace("+00:00", "Z"))}'
             f'{" — " + _e(run.release) if run.release else ""}</div>']
    if run.changes:
        parts.append(f'<div class="changes">{_e(run.changes)}</div>')
    if run.error:
        parts.append(f'<div class="error">{_e(run.error)}</div>')
    if stages:
        parts.append(f'<div class="stages">{_e(stages)}</div>')
    return f'<li class="run {"ok" if run.ok else "failed"}">{"".join(parts)}</li>'


def _e(text: str) -> str:
    return html.escape(text, quote=True)
