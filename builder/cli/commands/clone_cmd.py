"""imgbuild clone: a new, verified VM from a recipe's latest release (or a named release, VM or template)."""

from __future__ import annotations

import argparse

from builder.cli import jobs
from builder.cli.context import Context
from builder.pipeline.jobs import MakeOptions, clone_job
from builder.recipe import load_recipe
from builder.targets.select import add_target_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("clone", help="clone a recipe's latest release into a new, verified VM",
                       description="Clone the latest release of RECIPE (see `imgbuild release`; without any release, "
                                   "the recipe's own VM or template) as NAME with its own seed: new instance-id, "
                                   "SSH host key, hostname NAME, MAC address and, with --ip, address. Boots the "
                                   "clone and runs the recipe's checks; writes OUT/NAME/report.json and clone.log.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--name", required=True, metavar="NAME", help="the clone's VM name and hostname")
    p.add_argument("--release", metavar="RELEASE",
                   help="clone this release (e.g. golden-base-20261130-1) instead of the latest")
    p.add_argument("--ip", metavar="CIDR",
                   help="the clone's address, e.g. 192.168.1.251/24 (recipes with a static address)")
    p.add_argument("--linked", action="store_true",
                   help="a linked clone sharing the template's disk (a release, or `imgbuild template` first); "
                        "default: a full copy")
    p.add_argument("--keep", action="store_true", help="leave the clone running and print how to reach it")
    p.add_argument("--keep-on-failure", action="store_true", help="after a failure, leave the clone for inspection")
    jobs.add_json_option(p)
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    job = clone_job(recipe, args.name, ctx.out_dir, MakeOptions(keep=args.keep, keep_on_failure=args.keep_on_failure),
                    ip=args.ip, linked=args.linked, source=args.release)
    if recipe.network.is_static and args.ip is None and not ctx.out.as_json:
        print(f"    warning: no --ip given: the clone uses {recipe.name}'s address {recipe.network.address}",
              file=ctx.out.err)
    return jobs.run(ctx, args, [job])
