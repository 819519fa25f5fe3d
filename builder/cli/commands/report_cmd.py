"""imgbuild report --html FILE: the run history of every recipe as one self-contained page."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.context import Context
from builder.errors import InvalidInput
from builder.fsutil import write_atomic
from builder.pipeline.jobs import collect_history, render_history_page


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("report", help="write the run history as one HTML page",
                       description="Write one self-contained static HTML page (no script, nothing fetched): a row "
                                   "per recipe with its last runs from OUT/NAME/history/, newest first: result, "
                                   "checks passed, durations by stage, what changed in the image, and a thumbnail "
                                   "of the desktop screenshot where there is one.")
    p.add_argument("--html", required=True, type=Path, metavar="FILE", help="where to write the page")
    p.add_argument("--runs", type=int, default=10, metavar="N", help="runs shown per recipe (default 10)")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    if args.runs < 1:
        raise InvalidInput(f"--runs {args.runs}: show at least one run")
    rows = collect_history(ctx.out_dir, args.runs)
    write_atomic(args.html, render_history_page(rows))
    print(f"{args.html}: {len(rows)} recipe(s), {sum(len(r.runs) for r in rows)} run(s)")
    return 0
