"""imgbuild template: turn a recipe's verified, shut-down VM into a template for clones."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.cli.jobs import require_vm
from builder.errors import ImgbuildError
from builder.recipe import load_recipe
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("template", help="convert a recipe's verified VM into a template",
                       description="Convert the VM made by `imgbuild make RECIPE` (verified and shut down) into a "
                                   "template: it can no longer be started, only cloned with `imgbuild clone`.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    vm = require_vm(target, recipe.name, hint=f"build and verify it first: imgbuild make {recipe.name}")
    if target.is_running(vm):
        raise ImgbuildError(f"{recipe.name} is running on {target.name}; a template is made from a shut-down VM",
                            detail="shut it down first (make shuts it down unless --keep was given)")
    target.make_template(vm)
    ctx.out.data({"recipe": recipe.name, "target": target.name, "vm": vm.ident, "template": True})
    ctx.out.text(f"{recipe.name}: now a template on {target.name} (VM {vm.ident})")
    ctx.out.text(f"  clone it with: imgbuild clone {recipe.name} --name NAME [--linked]")
    return 0
