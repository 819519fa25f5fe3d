"""imgbuild template: publish a recipe's verified VM as a release (a template clones are made from)."""

from __future__ import annotations

import argparse

from builder.cli import jobs
from builder.cli.context import Context
from builder.pipeline.jobs import ReleaseOptions, template_job
from builder.recipe import load_recipe
from builder.targets.select import add_target_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("template", help="publish a recipe's verified VM as a release template",
                       description="Copy the VM made by `imgbuild make RECIPE` (verified and shut down) into a "
                                   "release template RECIPE-YYYYMMDD-N, prove it with a linked clone that runs the "
                                   "recipe's checks, then label it latest (like `imgbuild release`, without a new "
                                   "build). The VM itself stays a VM: the next `make RECIPE` verifies it again or "
                                   "rebuilds it.")
    p.add_argument("recipe", metavar="RECIPE")
    jobs.add_keep_releases_option(p)
    jobs.add_json_option(p)
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    return jobs.run(ctx, args, [template_job(recipe, ctx.out_dir, ReleaseOptions(keep=args.keep_releases))])
