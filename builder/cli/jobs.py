"""What the VM-building commands (make, clone) and the VM commands (verify, template) share in the CLI."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

from builder.errors import ImgbuildError
from builder.pipeline.report import Report
from builder.targets.base import VM, Target


def require_vm(target: Target, name: str, hint: str) -> VM:
    vm = target.find_vm(name)
    if vm is None:
        raise ImgbuildError(f"no VM named {name} on {target.name}", detail=hint)
    return vm


def run_job(job: Callable[[], Report], report_path: Path) -> Report:
    """Run make or clone; on failure point at the report, which says what happened stage by stage."""
    try:
        return job()
    except ImgbuildError:
        if report_path.exists():
            print(f"imgbuild: report: {report_path}", file=sys.stderr)
        raise


def print_summary(report: Report, name: str, report_path: Path, *, keep: bool, what: str = "") -> None:
    passed = sum(c["ok"] for c in report.checks)
    what = f"{what} " if what else ""
    print(f"{name}: {what}verified on {report.target} in {report.seconds:.0f}s ({passed}/{len(report.checks)} "
          "checks passed)")
    print(f"  report: {report_path}")
    if keep:
        print(f"  it is running; reach it with:\n    {report.access['ssh']}")
        for url in report.access.get("urls", []):
            print(f"    {url}")
        print(f"  remove it with: imgbuild destroy {name}")
    else:
        print(f"  it was shut down cleanly (state: {report.vm.get('state', '?')})")
