"""Template releases that never lose the last good one.

A release of recipe R is a template named ``R-YYYYMMDD-N`` labelled with R (and ``latest`` on the newest
good one); the target stores the labels (PVE tags, a recorded label locally). ``imgbuild release R``:

1. removes what an interrupted release left (a candidate VM or template, its check clone; see
   ``leftovers``), and repairs a ``latest`` left on two releases by a run stopped between two label writes;
2. builds a candidate VM called like the new release with ``make`` (verified), or copies a verified VM
   (``imgbuild template R``);
3. turns it into a template labelled ``candidate``, with its package manifest;
4. boots a linked clone of it (``R-YYYYMMDD-N-check``), runs the recipe's checks, removes the clone;
5. only then labels it R + ``latest`` (one write) and takes ``latest`` off the previous one;
6. keeps the newest ``--keep`` releases: an older one that a VM still depends on stays, and says which.

Any failure or interrupt removes the candidate and its clone and leaves the previous ``latest`` as it was.
After a kill -9, the labels tell what is what: a template is a release only once it carries its recipe's
label without ``candidate``; anything else named like a release (or its check clone) is a leftover.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import write_atomic
from builder.pipeline.clone import clone
from builder.pipeline.make import MakeOptions, make, reported
from builder.pipeline.report import Report
from builder.pipeline.stages import Stages
from builder.progress import NullProgress, Progress
from builder.recipe.model import Recipe
from builder.targets.base import VM, Target

RELEASE_NAME = re.compile(r"^(?P<recipe>.+)-(?P<date>\d{8})-(?P<n>[1-9]\d{0,3})$")
CHECK_SUFFIX = "-check"
LATEST = "latest"
CANDIDATE = "candidate"
DEFAULT_KEEP = 3
LOCAL_MANIFEST = "release-manifest.json"  # OUT/RELEASE/: the manifest, also where the target cannot hold it


@dataclass
class Release:
    name: str
    recipe: str
    date: str
    number: int
    vm: VM
    latest: bool = False
    held_by: list[str] = field(default_factory=list)  # VMs that depend on it (filled by describe())

    @property
    def order(self) -> tuple[str, int]:
        return (self.date, self.number)


@dataclass
class ReleaseOptions:
    keep: int = DEFAULT_KEEP  # releases kept (the new one included)
    refresh_image: bool = False
    method: str | None = None
    from_vm: str | None = None  # promote this verified, stopped VM instead of building a candidate
    today: dt.date | None = None  # tests: the date in the name


def check_keep(keep: int) -> int:
    if keep < 1:
        raise InvalidInput(f"--keep {keep}: at least the new release is kept; give 1 or more")
    return keep


def parse_name(name: str, recipe: str) -> tuple[str, int] | None:
    """(date, number) when *name* is a release name of *recipe*."""
    m = RELEASE_NAME.match(name)
    if m is None or m["recipe"] != recipe:
        return None
    return m["date"], int(m["n"])


def releases_of(target: Target, recipe: str, vms: list[VM] | None = None) -> list[Release]:
    """The complete releases of *recipe* on *target*, oldest first."""
    found = []
    for vm in target.list_vms() if vms is None else vms:
        key = parse_name(vm.name, recipe)
        if key is None or vm.broken or not target.is_template(vm):
            continue
        labels = target.labels(vm)
        if recipe not in labels or CANDIDATE in labels:
            continue
        found.append(Release(vm.name, recipe, key[0], key[1], vm, latest=LATEST in labels))
    return sorted(found, key=lambda r: r.order)


def latest_of(releases: list[Release]) -> Release | None:
    """The newest release labelled latest (two carry it only after a run was killed between two writes)."""
    marked = [r for r in releases if r.latest]
    return marked[-1] if marked else None


def latest_release(target: Target, recipe: str) -> VM | None:
    latest = latest_of(releases_of(target, recipe))
    return latest.vm if latest else None


def leftovers(target: Target, recipe: str, vms: list[VM] | None = None) -> list[VM]:
    """What interrupted releases of *recipe* left: VMs named like a release (or its check clone) that are not
    complete releases. Check clones come first: they depend on the candidate template."""
    vms = target.list_vms() if vms is None else vms
    done = {r.name for r in releases_of(target, recipe, vms)}
    clones, candidates = [], []
    for vm in vms:
        if vm.name in done or vm.broken:  # status shows a broken VM; destroy removes it
            continue
        if vm.name.endswith(CHECK_SUFFIX) and parse_name(vm.name[: -len(CHECK_SUFFIX)], recipe):
            clones.append(vm)
        elif parse_name(vm.name, recipe):
            candidates.append(vm)
    return clones + candidates


def next_name(recipe: str, taken: list[str], today: dt.date) -> str:
    date = today.strftime("%Y%m%d")
    used = [key[1] for key in (parse_name(n, recipe) for n in taken) if key and key[0] == date]
    return f"{recipe}-{date}-{max(used, default=0) + 1}"


def describe(target: Target, recipe: str, vms: list[VM] | None = None) -> list[Release]:
    """Releases with the VMs holding each (for status and pruning)."""
    found = releases_of(target, recipe, vms)
    for release in found:
        release.held_by = target.dependents(release.vm)
    return found


@contextlib.contextmanager
def release_lock(out_root: Path, recipe: str, *, wait: bool = False) -> Iterator[bool]:
    """One release of a recipe at a time from this machine. Yields False (without waiting) when another run
    holds it and *wait* is off: its candidate is then no leftover."""
    path = out_root / recipe / ".release.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def clean_up(target: Target, recipe: str, progress: Progress = NullProgress()) -> dict[str, Any]:
    """Remove leftovers of interrupted releases and take ``latest`` off all but the newest holder. Call it
    holding ``release_lock``. Returns what was done, by name."""
    vms = target.list_vms()
    removed = []
    for vm in leftovers(target, recipe, vms):
        progress.note(f"removing {vm.name}: left by an interrupted release of {recipe}")
        target.destroy(vm)
        removed.append(vm.name)
    releases = releases_of(target, recipe, [v for v in vms if v.name not in removed])
    newest = latest_of(releases)
    repaired = []
    for release in releases:
        if release.latest and release is not newest:
            progress.note(f"{release.name} was still labelled latest beside {newest.name if newest else '?'}: "
                          "taking the label off")
            target.set_labels(release.vm, target.labels(release.vm) - {LATEST})
            repaired.append(release.name)
    return {"removed": removed, "latest_repaired": repaired}


def candidate_recipe(recipe: Recipe, name: str, target: Target) -> Recipe:
    """The recipe as the candidate VM is built: named like the release (its out dir, its VM), with a MAC of
    its own so it never meets the recipe's own VM on a bridge; the host name stays the recipe's."""
    network = replace(recipe.network, mac=target.clone_mac(name).upper(), mac_given=True)
    return replace(recipe, name=name, network=network)


def release(recipe: Recipe, out_root: Path, target: Target, options: ReleaseOptions,
            progress: Progress = NullProgress()) -> Report:
    """Build, prove and publish a new release of *recipe*. Raises (after rolling back) like make()."""
    check_keep(options.keep)
    report = Report(recipe=recipe.name, target=target.name, method="release")
    stages = Stages(report, progress)
    made: dict[str, VM | None] = {"candidate": None, "check": None}
    published = False

    def leave(ok: bool) -> None:
        if ok or published:
            return
        for what in ("check", "candidate"):  # the clone first: it depends on the candidate
            name = report.release.get(what)
            if not name:
                continue
            try:
                vm = target.find_vm(name)
                if vm is not None:
                    progress.note(f"removing the {what} {name}: the release failed")
                    target.destroy(vm)
            except ImgbuildError as exc:
                progress.note(f"warning: could not remove {name}: {exc.message}; the next release removes it")
        report.release["rolled_back"] = True

    with release_lock(out_root, recipe.name) as mine:
        if not mine:
            raise ImgbuildError(f"another release of {recipe.name} is running from this machine",
                                detail=f"wait for it; its lock is {out_root / recipe.name / '.release.lock'}")
        with reported(report, out_root / recipe.name / "release.json", leave):
            with stages.stage("leftovers") as record:
                cleaned = clean_up(target, recipe.name, progress)
                report.release["cleaned"] = cleaned
                record.detail = ", ".join(f"removed {n}" for n in cleaned["removed"]) or "none"
            previous = latest_of(releases_of(target, recipe.name))
            report.release["previous"] = previous.name if previous else None
            name = next_name(recipe.name, [v.name for v in target.list_vms()], options.today or dt.date.today())
            report.release["name"] = name
            progress.note(f"new release: {name}" + (f" (latest now: {previous.name})" if previous else ""))

            with stages.stage("candidate") as record:
                report.release["candidate"] = name
                made["candidate"] = build_candidate(recipe, name, out_root, target, options, report, progress)
                record.detail = f"{name} built and verified"
            candidate = made["candidate"]
            assert candidate is not None
            manifest = report.release.pop("manifest_text", None)
            report.changes = release_changes(target, previous, manifest, out_root)
            progress.note(f"since {previous.name if previous else 'no earlier release'}: {report.changes['summary']}")
            with stages.stage("template"):
                target.make_template(candidate)
                target.set_labels(candidate, {CANDIDATE})
                if manifest:
                    write_atomic(out_root / name / LOCAL_MANIFEST, manifest)  # where diff finds it on this machine
                    report.release["manifest"] = target.store_manifest(candidate, manifest)
            with stages.stage("check") as record:
                check_name = name + CHECK_SUFFIX
                report.release["check"] = check_name
                proof = clone(recipe, check_name, out_root, target, linked=True, source=name,
                              options=MakeOptions(), progress=progress)
                report.checks = proof.checks
                made["check"] = target.find_vm(check_name)
                if made["check"] is not None:
                    target.destroy(made["check"])
                record.detail = f"a linked clone of {name} passed {len(proof.checks)} check(s)"
            with stages.stage("promote") as record:
                target.set_labels(candidate, {recipe.name, LATEST})
                published = True
                for older in releases_of(target, recipe.name):
                    if older.name != name and older.latest:
                        target.set_labels(older.vm, target.labels(older.vm) - {LATEST})
                record.detail = f"latest: {name}" + (f" (was {previous.name})" if previous else "")
            with stages.stage("prune") as record:
                report.release.update(prune(target, recipe.name, options.keep, progress))
                record.detail = prune_line(report.release)
            report.access = {"clone": f"imgbuild clone {recipe.name} --name NAME --target {target.name}"}
    return report


def build_candidate(recipe: Recipe, name: str, out_root: Path, target: Target, options: ReleaseOptions,
                    report: Report, progress: Progress) -> VM:
    if options.from_vm is not None:
        source = target.find_vm(options.from_vm)
        if source is None:
            raise ImgbuildError(f"no VM named {options.from_vm} on {target.name}",
                                detail=f"build and verify it first: imgbuild make {recipe.name}")
        if target.is_template(source):
            raise ImgbuildError(f"{source.name} is a template already; releases are copied from a verified VM",
                                detail=f"make a new release with: imgbuild release {recipe.name}")
        if target.is_running(source):
            raise ImgbuildError(f"{source.name} is running on {target.name}; a release is made from a shut-down VM",
                                detail="shut it down first (make shuts it down unless --keep was given)")
        progress.step(f"copying {source.name} as {name}")
        vm = target.clone(source, name, full=True)
        report.release["from_vm"] = source.name
        made_report = _read_json(out_root / source.name / "report.json")
        report.cache.update({k: v for k, v in (made_report.get("cache") or {}).items() if k in ("image", "inputs")})
        keep_manifest_text(report)
        return vm
    made = make(candidate_recipe(recipe, name, target), out_root, target,
                MakeOptions(method=options.method, rebuild=True, replace=False, refresh_image=options.refresh_image),
                progress)
    report.release["candidate_report"] = str(out_root / name / "report.json")
    report.release["candidate_checks"] = f"{sum(c['ok'] for c in made.checks)}/{len(made.checks)}"
    report.cache.update(made.cache)
    keep_manifest_text(report)
    found = target.find_vm(name)
    if found is None:
        raise ImgbuildError(f"the candidate {name} is gone from {target.name} after its make")
    return found


def keep_manifest_text(report: Report) -> None:
    """The candidate's package manifest (the kept copy its make named) as text, for the template."""
    copy = (report.cache.get("image") or {}).get("manifest_copy")
    if copy:
        try:
            report.release["manifest_text"] = Path(copy).read_text()
        except OSError:
            pass


def release_changes(target: Target, previous: Release | None, manifest: str | None,
                    out_root: Path) -> dict[str, Any]:
    """The candidate's packages against the latest release's: its manifest stored with the template, else the
    copy this machine kept (PVE's description holds 8 KiB: a desktop's manifest does not fit)."""
    from builder.pipeline.changes import changes_since, parse_manifest

    current = parse_manifest(manifest) if manifest else None
    before = None
    if previous is not None:
        stored = target.read_manifest(previous.vm)
        local = out_root / previous.name / LOCAL_MANIFEST
        if stored is None and local.is_file():
            stored = local.read_text()
        old = parse_manifest(stored) if stored else None
        before = (old, previous.name) if old is not None else None
    what = f"release {previous.name}" if previous else "no earlier release"
    return changes_since(before, current, what)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def prune(target: Target, recipe: str, keep: int, progress: Progress) -> dict[str, Any]:
    """Remove releases older than the newest *keep*; one a VM depends on stays, and says which."""
    found = releases_of(target, recipe)
    removed, held = [], []
    latest = latest_of(found)
    for old in found[:-keep] if keep < len(found) else []:
        if latest is not None and old.name == latest.name:
            continue
        holders = target.dependents(old.vm)
        if holders:
            verb = "is a linked clone" if len(holders) == 1 else "are linked clones"
            progress.note(f"keeping {old.name}: {', '.join(holders)} {verb} of it")
            held.append({"name": old.name, "held_by": holders})
            continue
        progress.note(f"removing {old.name}: older than the newest {keep}")
        target.destroy(old.vm)
        removed.append(old.name)
    kept = [r.name for r in releases_of(target, recipe)]
    return {"removed": removed, "held": held, "kept": kept}


def prune_line(info: dict[str, Any]) -> str:
    parts = [f"kept {len(info.get('kept', []))}"]
    if info.get("removed"):
        parts.append("removed " + ", ".join(info["removed"]))
    for h in info.get("held", []):
        parts.append(f"{h['name']} held by {', '.join(h['held_by'])}")
    return "; ".join(parts)
