"""imgbuild destroy: stop and remove a recipe's VM (one kept by make --keep)."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("destroy", help="stop and remove a recipe's VM",
                       description="Stop and remove the VM called NAME (and its disks) on the target.")
    p.add_argument("name", metavar="NAME", help="VM name (the recipe name, or a clone's name)")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    vm = target.find_vm(args.name)
    if vm is None:
        ctx.out.text(f"no VM named {args.name} on {target.name}: nothing to do")
        return 0
    target.destroy(vm)
    ctx.out.text(f"{args.name}: destroyed on {target.name}")
    return 0
