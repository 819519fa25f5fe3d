"""``imgbuild status``: the VMs, templates and releases imgbuild made on a target, and whether each is still up
to date with its recipe (and why not), without a boot or an upload.

It also finds what interrupted releases left (see releases.py) and removes it, unless a release of that
recipe is running from this machine right now.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.pipeline import freshness, releases
from builder.pipeline.freshness import Inputs, Verdict
from builder.progress import NullProgress, Progress
from builder.recipe.model import Recipe
from builder.targets.base import VM, Target


@dataclass
class VmStatus:
    name: str
    id: str
    target: str
    state: str  # running, stopped, template
    kind: str  # vm (a recipe's own), release, clone, other
    recipe: str | None
    up_to_date: bool | None
    why: list[str]
    last_job: dict[str, Any] | None
    address: str | None
    latest: bool = False  # releases: labelled latest
    held_by: list[str] = field(default_factory=list)  # releases: VMs that depend on it
    broken: str | None = None  # why imgbuild cannot use this VM's record (remove it with destroy)
    node: str | None = None  # the PVE cluster node it lives on (None on the local target)


@dataclass
class LabStatus:
    target: str
    vms: list[VmStatus]
    leftovers_removed: list[str]
    leftovers_kept: list[str]  # a release of their recipe is running right now
    latest_repaired: list[str]

    def releases(self) -> list[VmStatus]:
        return [v for v in self.vms if v.kind == "release"]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lab_status(target: Target, recipes: list[Recipe], out_root: Path, *, clean: bool = True,
               progress: Progress = NullProgress()) -> LabStatus:
    by_name = {r.name: r for r in recipes}
    removed: list[str] = []
    kept: list[str] = []
    repaired: list[str] = []
    vms = target.list_vms()
    if clean:
        for recipe in recipes:
            left = releases.leftovers(target, recipe.name, vms)
            stale_latest = [r for r in releases.releases_of(target, recipe.name, vms) if r.latest][:-1]
            if not left and not stale_latest:
                continue
            with releases.release_lock(out_root, recipe.name) as mine:
                if not mine:
                    kept += [v.name for v in left]
                    continue
                done = releases.clean_up(target, recipe.name, progress)
                removed += done["removed"]
                repaired += done["latest_repaired"]
        if removed or repaired:
            vms = target.list_vms()

    current: dict[str, tuple[Inputs | None, str]] = {}

    def now(recipe: Recipe) -> tuple[Inputs | None, str]:
        if recipe.name not in current:
            current[recipe.name] = freshness.check_current(recipe, out_root)
        return current[recipe.name]

    release_info: dict[str, releases.Release] = {}
    for recipe in recipes:
        for rel in releases.releases_of(target, recipe.name, vms):
            release_info[rel.name] = rel
    rows = [vm_status(target, vm, by_name, release_info, out_root, now) for vm in vms]
    return LabStatus(target.name, rows, removed, kept, repaired)


def vm_status(target: Target, vm: VM, recipes: dict[str, Recipe], release_info: dict[str, releases.Release],
              out_root: Path, now: Any) -> VmStatus:
    job = last_job(out_root / vm.name / "report.json", target.name)
    if vm.broken:  # its record is unusable: say so, and let the other VMs' rows stand
        return VmStatus(vm.name, vm.ident, target.name, "broken", "other", None, None, [vm.broken], job,
                        (job or {}).get("address"), broken=vm.broken, node=vm.data.get("node"))
    template = target.is_template(vm)
    state = "template" if template else ("running" if target.is_running(vm) else "stopped")
    row = VmStatus(vm.name, vm.ident, target.name, state, "other", None, None, [], job,
                   (job or {}).get("address"), node=vm.data.get("node"))
    rel = release_info.get(vm.name)
    if rel is not None:
        row.kind, row.recipe, row.latest = "release", rel.recipe, rel.latest
        row.held_by = target.dependents(vm)
        recorded = _any_inputs(out_root / vm.name / "report.json")
        verdict = freshness.judge(recorded, None, *now(recipes[rel.recipe]), release=True)
    elif vm.name in recipes:
        row.kind, row.recipe = "vm", vm.name
        key = target.built_from(vm)
        if key is None:
            found = target.find_vm(vm.name)  # PVE lists VMs without their description
            key = target.built_from(found) if found else None
        recorded = freshness.recorded_inputs(out_root / vm.name, key)
        verdict = freshness.judge(recorded, key, *now(recipes[vm.name]))
    else:
        source = _clone_source(out_root / vm.name / "report.json")
        row.kind = "clone" if source else "other"
        verdict = Verdict(None, [f"a clone of {source}" if source else "made by no recipe here"])
    row.up_to_date, row.why = verdict.up_to_date, verdict.why
    return row


def _any_inputs(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    inputs = (data.get("cache") or {}).get("inputs") if isinstance(data, dict) else None
    return inputs if isinstance(inputs, dict) else None


def _clone_source(path: Path) -> str | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    vm = data.get("vm") if isinstance(data, dict) else None
    return str(vm["source"]) if isinstance(vm, dict) and vm.get("source") and "clone" in str(data.get("method")) \
        else None


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
