"""imgbuild status: the VMs and releases imgbuild made on a target, their state, whether each is up to date
with its recipe (and why not), and how their last job went."""

from __future__ import annotations

import argparse
from typing import Any

from builder.cli.context import Context
from builder.pipeline.jobs import lab_status, valid_recipes
from builder.progress import ConsoleProgress, NullProgress
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="the VMs and releases imgbuild made on the target; up to date or not",
                       description="List the VMs, templates and releases imgbuild made on the target: running, "
                                   "stopped, template or broken (its record unreadable; imgbuild destroy NAME "
                                   "removes it); which release of a recipe is latest and which VMs hold an older one; "
                                   "whether each VM and release is up to date with its recipe (the recipe "
                                   "is rendered and its inputs compared with what the VM was built from: no boot, no "
                                   "upload) and why not (recipe changed, newer image, newer imgbuild); and the result "
                                   "of the last job of each (OUT/NAME/report.json). What an interrupted release "
                                   "left is named and removed.")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    status = lab_status(target, valid_recipes(ctx.recipes_dir), ctx.out_dir,
                        progress=NullProgress() if ctx.out.as_json else ConsoleProgress())
    ctx.out.data(status.as_dict())
    for name in status.leftovers_removed:
        ctx.out.text(f"removed {name}: left by an interrupted release")
    for name in status.latest_repaired:
        ctx.out.text(f"{name}: took off a stale latest label (an interrupted release had moved it)")
    for name in status.leftovers_kept:
        ctx.out.text(f"{name}: a release of its recipe is running now; not touched")
    if not status.vms:
        ctx.out.text(f"no VMs made by imgbuild on {target.name}")
        return 0
    vms = [v for v in status.vms if v.kind != "release"]
    if vms:
        ctx.out.table([(v.name, v.id, v.state, up_line(v), last_job_line(v.last_job), v.address or "-")
                       for v in vms], header=("NAME", "ID", "STATE", "UP TO DATE", "LAST JOB", "ADDRESS"))
        for v in vms:
            if v.broken:
                ctx.out.text(f"{v.name} is broken: {v.broken}\n  remove it with: imgbuild destroy {v.name}")
    rels = status.releases()
    if rels:
        if vms:
            ctx.out.text()
        ctx.out.table([(v.recipe or "-", v.name, v.id, "latest" if v.latest else "-", ", ".join(v.held_by) or "-",
                        up_line(v)) for v in rels],
                      header=("RECIPE", "RELEASE", "ID", "LATEST", "HELD BY", "UP TO DATE"))
    return 0


def up_line(row: Any) -> str:
    if row.up_to_date:
        return "yes"
    prefix = "no: " if row.up_to_date is False else "-: "
    return prefix + "; ".join(row.why)


def last_job_line(job: dict[str, Any] | None) -> str:
    if job is None:
        return "-"
    when = (job["finished"] or "unfinished").replace("+00:00", "Z")
    if job["ok"]:
        return f"ok {when} ({job['checks_passed']}/{job['checks']} checks)"
    return f"FAILED {when}: {(job['error'] or 'unknown error')[:60]}"
