"""imgbuild status: the VMs imgbuild made on a target, their state, and how their last job went."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from builder.cli.context import Context
from builder.targets.base import VM, Target
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("status", help="list the VMs imgbuild made on the target",
                       description="List the VMs and templates imgbuild made on the target: running, stopped, "
                                   "template or broken (its record unreadable; imgbuild destroy NAME removes it), "
                                   "and the result of the last make/clone/verify of each (from "
                                   "OUT/NAME/report.json: when, checks passed or the error, the address).")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    rows = [vm_status(target, vm, ctx.out_dir) for vm in target.list_vms()]
    ctx.out.data(rows)
    if not rows:
        ctx.out.text(f"no VMs made by imgbuild on {target.name}")
        return 0
    ctx.out.table([(r["name"], r["id"], r["state"], last_job_line(r["last_job"]), r["address"] or "-")
                   for r in rows], header=("NAME", "ID", "STATE", "LAST JOB", "ADDRESS"))
    for r in rows:
        if r["broken"]:
            ctx.out.text(f"{r['name']} is broken: {r['broken']}\n  remove it with: imgbuild destroy {r['name']}")
    return 0


def vm_status(target: Target, vm: VM, out_dir: Path) -> dict[str, Any]:
    if vm.broken:  # its record is unusable: say so, and let the other VMs' rows stand
        state = "broken"
    elif target.is_template(vm):
        state = "template"
    else:
        state = "running" if target.is_running(vm) else "stopped"
    job = last_job(out_dir / vm.name / "report.json", target.name)
    return {"name": vm.name, "id": vm.ident, "target": target.name,  # a vmid on PVE, the VM's directory locally
            "node": vm.data.get("node"),  # a PVE cluster's node
            "state": state, "last_job": job, "address": (job or {}).get("address"), "broken": vm.broken or None}


def last_job(path: Path, target: str) -> dict[str, Any] | None:
    """The summary of OUT/NAME/report.json when it describes a job on *target* (None otherwise)."""
    try:
        report = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(report, dict) or report.get("target") != target:
        return None
    checks = [c for c in report.get("checks") or [] if isinstance(c, dict)]
    return {
        "ok": bool(report.get("ok")),
        "finished": report.get("finished"),
        "method": report.get("method"),
        "checks_passed": sum(1 for c in checks if c.get("ok")),
        "checks": len(checks),
        "error": report.get("error"),
        "address": (report.get("vm") or {}).get("address"),
    }


def last_job_line(job: dict[str, Any] | None) -> str:
    if job is None:
        return "-"
    when = (job["finished"] or "unfinished").replace("+00:00", "Z")
    if job["ok"]:
        return f"ok {when} ({job['checks_passed']}/{job['checks']} checks)"
    return f"FAILED {when}: {(job['error'] or 'unknown error')[:60]}"
