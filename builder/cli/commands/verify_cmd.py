"""imgbuild verify: run a recipe's checks against its running VM (one kept with make --keep)."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.cli.jobs import require_vm
from builder.errors import CheckFailed
from builder.pipeline.jobs import verify_again
from builder.progress import ConsoleProgress
from builder.recipe import load_recipe
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("verify", help="run a recipe's checks against its running VM",
                       description="Find RECIPE's VM on the target, read its address from the guest agent and run "
                                   "the recipe's checks. A stopped VM is started for the checks and shut down again "
                                   "afterwards (unless --keep). A desktop check reads the screen with QEMU's screendump "
                                   "locally and through the VM's VNC console (vncproxy, needs VM.Console) on Proxmox VE.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--keep", action="store_true", help="leave the VM running if verify had to start it")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    vm = require_vm(target, recipe.name, hint=f"create one with: imgbuild make {recipe.name} --keep")
    outcomes = verify_again(recipe, ctx.out_dir, target, vm, keep=args.keep, progress=ConsoleProgress())
    ctx.out.data([o.as_dict() for o in outcomes])
    for o in outcomes:
        ctx.out.text(o.line())
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise CheckFailed(f"{len(failed)} check(s) failed: {', '.join(o.check for o in failed)}")
    return 0
