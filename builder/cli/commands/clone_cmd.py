"""imgbuild clone: a new VM from a recipe's VM (or template), personalised by its own seed, then verified.

The clone gets what makes it a new machine: a new name and hostname, a new MAC address, a seed ISO
with a new cloud-init instance-id and its own SSH host key (rendered into OUT/NAME/), and, for a
recipe with a static address, the address given with --ip. It is booted and checked with the
recipe's checks, like `imgbuild make` (the same pipeline steps), and leaves OUT/NAME/report.json.
"""

from __future__ import annotations

import argparse
import ipaddress
import re
from dataclasses import replace
from pathlib import Path

from builder.cli.context import Context
from builder.cli.jobs import print_summary, run_job
from builder.errors import ImgbuildError, InvalidInput
from builder.outdir import recipe_lock
from builder.pipeline import specs
from builder.pipeline.make import (
    Built,
    MakeOptions,
    boot,
    build_artifacts,
    forget_seed,
    reported,
    settle,
    stage_media,
    verify_stage,
)
from builder.pipeline.report import Report
from builder.pipeline.stages import Stages
from builder.progress import ConsoleProgress, NullProgress, Progress
from builder.recipe import load_recipe
from builder.recipe.model import Recipe
from builder.render.write import render_recipe
from builder.targets.base import VM, Target
from builder.targets.select import add_target_options, open_target

HOSTNAME = re.compile(r"^(?=.{1,63}$)[A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?$")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clone", help="clone a recipe's VM or template into a new, verified VM",
                       description="Clone the VM (or template) of RECIPE as NAME with its own seed: new instance-id, "
                                   "SSH host key, hostname NAME, MAC address and, with --ip, address. Boots the "
                                   "clone and runs the recipe's checks; writes OUT/NAME/report.json.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--name", required=True, metavar="NAME", help="the clone's VM name and hostname")
    p.add_argument("--ip", metavar="CIDR",
                   help="the clone's address, e.g. 192.168.1.251/24 (recipes with a static address)")
    p.add_argument("--linked", action="store_true",
                   help="a linked clone sharing the template's disk (needs `imgbuild template RECIPE` first); "
                        "default: a full copy")
    p.add_argument("--keep", action="store_true", help="leave the clone running and print how to reach it")
    p.add_argument("--keep-on-failure", action="store_true", help="after a failure, leave the clone for inspection")
    add_target_options(p)
    p.set_defaults(func=run)


def clone_address(recipe: Recipe, ip: str | None) -> str | None:
    """The clone's address: --ip (checked against the recipe's network) or the recipe's own."""
    if ip is None:
        return recipe.network.address
    if not recipe.network.is_static:
        raise InvalidInput(f"--ip is for recipes with a static address; {recipe.name} uses {recipe.network.mode}")
    try:
        iface = ipaddress.ip_interface(ip)
    except ValueError:
        raise InvalidInput(f"--ip {ip!r} is not an address with a prefix length (e.g. 192.168.1.251/24)") from None
    if "/" not in ip:
        raise InvalidInput(f"--ip {ip!r} needs a prefix length (e.g. {ip}/24)")
    gateway = recipe.network.gateway
    if gateway and ipaddress.ip_address(gateway) not in iface.network:
        raise InvalidInput(f"--ip {ip}: the recipe's gateway {gateway} is not in {iface.network}")
    return str(iface)


def clone_recipe(recipe: Recipe, name: str, *, address: str | None, mac: str) -> Recipe:
    network = replace(recipe.network, address=address, mac=mac.upper(), mac_given=True)
    return replace(recipe, name=name, hostname=name, network=network)


def clone(recipe: Recipe, name: str, out_root: Path, target: Target, *, ip: str | None = None, linked: bool = False,
          options: MakeOptions | None = None, progress: Progress = NullProgress()) -> Report:
    """Clone RECIPE's VM as *name*, boot it with its own seed and verify it. Raises like make()."""
    options = options or MakeOptions()
    if not HOSTNAME.match(name):
        raise InvalidInput(f"--name {name!r} must be a host name: letters, digits and '-' (not first or last), "
                           "at most 63")
    if name == recipe.name:
        raise InvalidInput(f"the clone needs a name of its own (not {recipe.name})")
    derived = clone_recipe(recipe, name, address=clone_address(recipe, ip), mac=target.clone_mac(name))
    report = Report(recipe=name, target=target.name, method="linked clone" if linked else "full clone")
    report.vm = {"source": recipe.name}
    stages = Stages(report, progress)
    out_dir = out_root / name
    vm: VM | None = None
    built: Built | None = None

    def leave(ok: bool) -> None:
        settle(target, vm, built, created=vm is not None, ok=ok, options=options, report=report,
               progress=progress)

    with recipe_lock(out_root, name, f"clone {name}"), reported(report, out_dir / "report.json", leave):
        with stages.stage("find"):
            source = target.find_vm(recipe.name)
            if source is None:
                raise ImgbuildError(f"no VM named {recipe.name} on {target.name} to clone",
                                    detail=f"build it first: imgbuild make {recipe.name}")
            if target.find_vm(name) is not None:
                raise ImgbuildError(f"a VM named {name} already exists on {target.name}",
                                    detail=f"remove it with: imgbuild destroy {name}")
            target.preflight(specs.vm_spec(derived, disk_source=None, cdroms=()), media=("iso",), source=source,
                             console=any(c.check == "desktop" for c in recipe.verify), progress=progress)
        with stages.stage("render"):
            rendered = render_recipe(derived, out_root)
        with stages.stage("build"):
            built = build_artifacts(derived, rendered, target, "image", report, progress)
        with stages.stage("stage"):
            stage_media(target, built, report, progress)
        with stages.stage("clone"):
            vm = target.clone(source, name, full=not linked, seed=built.staged["seed"],
                              network=specs.guest_network(derived))
            report.vm.update({"name": vm.name, "target": vm.target, "id": vm.ident, "linked": linked})
        with stages.stage("boot"):
            address = boot(derived, target, vm, progress, report)
            report.vm["address"] = address
        verify_stage(stages, derived, rendered, target, vm, address, out_dir)
        forget_seed(target, vm, built, progress)
    return report


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    options = MakeOptions(keep=args.keep, keep_on_failure=args.keep_on_failure)
    progress = ConsoleProgress()
    if recipe.network.is_static and args.ip is None:
        progress.note(f"warning: no --ip given: the clone uses {recipe.name}'s address {recipe.network.address}")
    report_path = ctx.out_dir / args.name / "report.json"
    report = run_job(lambda: clone(recipe, args.name, ctx.out_dir, target, ip=args.ip, linked=args.linked,
                                   options=options, progress=progress), report_path)
    print_summary(report, args.name, report_path, keep=args.keep, what=f"{report.method} of {recipe.name}")
    return 0
