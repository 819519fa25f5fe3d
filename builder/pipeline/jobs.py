"""The pipeline's face to the command line: requests become jobs; one runner runs them.

The CLI parses arguments, opens nothing itself but a target factory, and calls only what this module
(and ``events``) exports: ``resolve_recipes``, ``check_parallel``, the ``*_job`` builders, ``run_jobs``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from builder.errors import InvalidInput
from builder.pipeline import specs
from builder.pipeline.changes import DiffResult, Resolver, compare
from builder.pipeline.clone import check_clone_name, clone, clone_address
from builder.pipeline.make import MakeOptions, RefreshOnce, make, verify_again
from builder.pipeline.page import collect as collect_history
from builder.pipeline.page import render_page as render_history_page
from builder.pipeline.releases import ReleaseOptions, check_keep, release
from builder.pipeline.runner import Job, JobResult, RunResult, TargetFactory, run_jobs
from builder.pipeline.status import LabStatus, lab_status
from builder.recipe import RecipeInvalid, find_recipe, list_recipe_files, load_recipe
from builder.recipe.model import Recipe
from builder.targets.base import Target

__all__ = [
    "Job",
    "JobResult",
    "LabStatus",
    "MakeOptions",
    "ReleaseOptions",
    "RunResult",
    "TargetFactory",
    "check_parallel",
    "clone_job",
    "collect_history",
    "diff_images",
    "image_spec",
    "lab_status",
    "make_job",
    "make_jobs",
    "release_job",
    "render_history_page",
    "resolve_recipes",
    "run_jobs",
    "template_job",
    "valid_recipes",
    "verify_again",
    "vm_spec",
]

QEMU_OVERHEAD_MIB = 256  # what one QEMU process takes beside its guest's memory (TCG translation cache)

image_spec = specs.image_spec  # cache: which golden image a recipe resolves to
vm_spec = specs.vm_spec  # doctor: what a recipe's VM asks of a target


def resolve_recipes(names: list[str], recipes_dir: Path, *, all_recipes: bool = False) -> list[Recipe]:
    """The recipes a run is asked for, in order and without repeats. Every unknown or invalid one is
    reported at once, before anything starts (InvalidInput: exit 2)."""
    if all_recipes and names:
        raise InvalidInput("give recipe names or --all, not both")
    if not all_recipes and not names:
        raise InvalidInput("name at least one recipe (or --all for every recipe in the recipes directory)")
    refs = [p.stem for p in list_recipe_files(recipes_dir)] if all_recipes else list(dict.fromkeys(names))
    recipes: list[Recipe] = []
    unknown: list[str] = []
    invalid: list[str] = []
    for ref in refs:
        try:
            find_recipe(ref, recipes_dir)
        except RecipeInvalid:
            unknown.append(ref)
            continue
        try:
            recipes.append(load_recipe(ref, recipes_dir))
        except RecipeInvalid as exc:
            invalid += [p.format() for p in exc.problems]
    if unknown or invalid:
        known = ", ".join(p.stem for p in list_recipe_files(recipes_dir)) or "none"
        parts = []
        if unknown:
            parts.append(f"unknown recipe{'s' if len(unknown) > 1 else ''}: {', '.join(unknown)}")
        if invalid:
            parts.append(f"{len(invalid)} problem(s) in the recipes asked for")
        detail = [f"recipes in {recipes_dir}: {known}"] if unknown else []
        raise InvalidInput("; ".join(parts) + "; nothing was started", detail="\n".join(detail + invalid))
    seen: set[str] = set()
    unique = []
    for recipe in recipes:
        if recipe.name not in seen:
            seen.add(recipe.name)
            unique.append(recipe)
    return unique


def memory_available_mib() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) // 1024
    except (OSError, ValueError, IndexError):
        pass
    return 0


@dataclass(frozen=True)
class Capacity:
    cores: int
    memory_mib: int


def check_parallel(recipes: list[Recipe], parallel: int, target_name: str,
                   capacity: Capacity | None = None) -> int:
    """The number of jobs to run at once. The local target refuses more parallel guests than this machine's
    cores (one each at least) and memory (the largest guests that could run together, plus QEMU's own) allow."""
    if parallel < 1:
        raise InvalidInput(f"-j {parallel}: run at least one job at a time")
    jobs = min(parallel, max(1, len(recipes)))
    local = target_name in ("local", "lab") or target_name.startswith("lab:")  # guests on this machine
    if not local or jobs == 1:
        return jobs
    capacity = capacity or Capacity(os.cpu_count() or 1, memory_available_mib())
    if jobs > capacity.cores:
        raise InvalidInput(f"-j {parallel}: the local target runs at most one guest per core, and this machine has "
                           f"{capacity.cores}", detail=f"use -j {capacity.cores} or less")
    biggest = sorted((r.vm.memory_mib for r in recipes), reverse=True)[:jobs]
    need = sum(biggest) + QEMU_OVERHEAD_MIB * jobs
    if capacity.memory_mib and need > capacity.memory_mib:
        fit = 0
        while fit < jobs and sum(biggest[: fit + 1]) + QEMU_OVERHEAD_MIB * (fit + 1) <= capacity.memory_mib:
            fit += 1
        raise InvalidInput(f"-j {parallel}: the {jobs} largest guests need {need} MiB together "
                           f"({' + '.join(map(str, biggest))} MiB of guest memory and {QEMU_OVERHEAD_MIB} MiB per "
                           f"QEMU), but {capacity.memory_mib} MiB is available",
                           detail=f"use -j {max(1, fit)} or less")
    return jobs


def make_jobs(recipes: list[Recipe], out_root: Path, options: MakeOptions) -> list[Job]:
    """A make job per recipe; with --refresh-image, an image that several of them use is built once."""
    if options.refresh_image and options.refresh_once is None:
        options.refresh_once = RefreshOnce()
    return [make_job(r, out_root, options) for r in recipes]


def make_job(recipe: Recipe, out_root: Path, options: MakeOptions) -> Job:
    return Job("make", recipe.name, recipe, lambda target, progress: make(recipe, out_root, target, options, progress),
               keep=options.keep)


def clone_job(recipe: Recipe, name: str, out_root: Path, options: MakeOptions, *, ip: str | None = None,
              linked: bool = False, source: str | None = None) -> Job:
    check_clone_name(recipe, name)  # bad input fails before any job starts
    clone_address(recipe, ip)
    return Job("clone", name, recipe,
               lambda target, progress: clone(recipe, name, out_root, target, ip=ip, linked=linked, source=source,
                                              options=options, progress=progress),
               keep=options.keep)


def release_job(recipe: Recipe, out_root: Path, options: ReleaseOptions) -> Job:
    check_keep(options.keep)
    return Job("release", recipe.name, recipe,
               lambda target, progress: release(recipe, out_root, target, options, progress),
               report_name="release.json")


def template_job(recipe: Recipe, out_root: Path, options: ReleaseOptions) -> Job:
    """``imgbuild template RECIPE``: a release copied from the recipe's verified VM (no new build); the VM
    itself stays a VM, so the next ``make`` verifies it again instead of stopping at a template."""
    options.from_vm = recipe.name
    job = release_job(recipe, out_root, options)
    job.kind = "release"
    return job


def valid_recipes(recipes_dir: Path) -> list[Recipe]:
    """Every recipe in *recipes_dir* that loads (status looks at what it can; validate names the rest)."""
    found = []
    for path in list_recipe_files(recipes_dir):
        try:
            found.append(load_recipe(str(path), recipes_dir))
        except RecipeInvalid:
            continue
    return found


def diff_images(a: str, b: str, out_root: Path, open_target: TargetFactory) -> DiffResult:
    """``imgbuild diff A B``: the target is opened only when A or B names a release."""
    opened: list[Target] = []

    def release_manifest(name: str) -> str | None:
        if not opened:
            opened.append(open_target())
        vm = opened[0].find_vm(name)
        return opened[0].read_manifest(vm) if vm is not None else None

    resolver = Resolver(out_root, release_manifest)
    return compare(resolver.resolve(a, "A"), resolver.resolve(b, "B"))
