"""imgbuild release: build, prove and publish a template release that never replaces the last good one."""

from __future__ import annotations

import argparse

from builder.cli import jobs
from builder.cli.context import Context
from builder.pipeline.jobs import ReleaseOptions, release_job, resolve_recipes
from builder.targets.select import add_target_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("release", help="build, prove and publish a new template release of a recipe",
                       description="Build a candidate VM of RECIPE and verify it; turn it into a template named "
                                   "RECIPE-YYYYMMDD-N; boot a linked clone of it and run the recipe's checks; only "
                                   "then label it latest (tags imgbuild, RECIPE, latest on Proxmox VE). Keeps the "
                                   "newest N releases, and any older one a VM still depends on. Any failure removes "
                                   "the candidate and its clone and leaves the previous latest as it was; what an "
                                   "interrupted release left is removed by the next one (or by `imgbuild status`). "
                                   "Writes OUT/RECIPE/release.json and release.log.")
    p.add_argument("recipe", metavar="RECIPE")
    jobs.add_keep_releases_option(p)
    p.add_argument("--refresh-image", action="store_true",
                   help="build the golden image again from the mirror's current packages first")
    p.add_argument("--method", choices=("image", "installer"), help="override the recipe's install.method")
    jobs.add_json_option(p)
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    (recipe,) = resolve_recipes([args.recipe], ctx.recipes_dir)
    options = ReleaseOptions(keep=args.keep_releases, refresh_image=args.refresh_image, method=args.method)
    return jobs.run(ctx, args, [release_job(recipe, ctx.out_dir, options)])
