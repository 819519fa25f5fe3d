"""What the job commands (make, clone, release, template) and the VM commands (verify) share in the CLI."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.context import Context
from builder.errors import ImgbuildError
from builder.pipeline.jobs import Job, TargetFactory, run_jobs
from builder.targets.base import VM, Target
from builder.targets.select import open_target


def require_vm(target: Target, name: str, hint: str) -> VM:
    vm = target.find_vm(name)
    if vm is None:
        raise ImgbuildError(f"no VM named {name} on {target.name}", detail=hint)
    return vm


def target_factory(ctx: Context, args: argparse.Namespace) -> TargetFactory:
    """Each job opens its own target (its own API session): jobs run in parallel threads."""
    out: Path = ctx.out_dir

    def factory() -> Target:
        return open_target(args.target, out, accel=args.accel, insecure=args.insecure)

    return factory


def target_name(args: argparse.Namespace) -> str:
    import os

    return args.target or ("pve" if os.environ.get("PROXMOX_URL") else "local")


def run(ctx: Context, args: argparse.Namespace, jobs: list[Job], *, parallel: int = 1, history_keep: int = 30) -> int:
    """Run *jobs* through the pipeline's runner and print their results; the exit status says whether all
    succeeded."""
    result = run_jobs(jobs, open_target=target_factory(ctx, args), sink=ctx.out.events(len(jobs)),
                      out_root=ctx.out_dir, parallel=parallel, history_keep=history_keep)
    return ctx.out.job_results(result)


def add_json_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", action="store_true",
                   help="print every event as one JSON object per line (schema: docs/events.md)")


def add_keep_releases_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep", type=int, default=3, metavar="N", dest="keep_releases",
                   help="releases kept, the new one included (default 3; at least 1); an older one a VM "
                        "depends on is kept too")
