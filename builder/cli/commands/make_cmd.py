"""imgbuild make: render, build, image, boot and verify recipes; write out/NAME/report.json and make.log."""

from __future__ import annotations

import argparse

from builder.cli import jobs
from builder.cli.context import Context
from builder.pipeline.jobs import MakeOptions, check_parallel, make_jobs, resolve_recipes
from builder.targets.select import add_target_options


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make", help="build, boot and verify VMs from recipes",
                       description="Run the whole job for each RECIPE: check -> render -> build -> image -> boot -> verify "
                                   "(check: what the target needs, before anything changes; on Proxmox VE the "
                                   "token's privileges, the node, its storages and network). "
                                   "Writes OUT/NAME/report.json (and a copy under OUT/NAME/history/) and "
                                   "OUT/NAME/make.log, and exits non-zero if any job failed. By default the "
                                   "verified VM is shut down cleanly; --keep leaves it running. Like make(1), an "
                                   "existing VM built from the same inputs (seed, image, installer, hardware) is "
                                   "not rebuilt: it is started and verified again; --rebuild makes a new one. "
                                   "Several recipes (or --all) run as separate jobs, -j at a time; one failing "
                                   "never stops the others, and a summary table closes the run. A desktop check reads the "
                                   "screen with QEMU's screendump locally and through the VM's VNC console "
                                   "(vncproxy, needs VM.Console) on Proxmox VE.")
    p.add_argument("recipes", metavar="RECIPE", nargs="*", help="recipe names or paths")
    p.add_argument("--all", action="store_true", help="every recipe in the recipes directory")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N",
                   help="run N jobs at a time (default 1); the local target refuses more guests than this "
                        "machine's cores and memory hold")
    p.add_argument("--method", choices=("image", "installer"),
                   help="override the recipe's install.method (image: golden image + cloud-init; "
                        "installer: unattended Debian installer)")
    p.add_argument("--keep", action="store_true", help="leave the VM running and print how to reach it")
    p.add_argument("--keep-on-failure", action="store_true",
                   help="after a failure, leave the VM (and uploaded media) for inspection")
    p.add_argument("--rebuild", action="store_true",
                   help="make a new VM even when the existing one is up to date (built from the same inputs)")
    p.add_argument("--refresh-image", action="store_true",
                   help="build the golden image again from the mirror's current packages (security updates) "
                        "instead of reusing the cached one (needs root); with new packages the VM is rebuilt on "
                        "the new image, without any the image is byte-identical and the VM stays up to date")
    p.add_argument("--no-replace", dest="replace", action="store_false",
                   help="fail instead of replacing an existing VM of the same name that is not up to date")
    p.add_argument("--history", type=int, default=30, metavar="K",
                   help="reports kept under OUT/NAME/history/ (default 30)")
    jobs.add_json_option(p)
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipes = resolve_recipes(args.recipes, ctx.recipes_dir, all_recipes=args.all)
    parallel = check_parallel(recipes, args.jobs, jobs.target_name(args))
    options = MakeOptions(method=args.method, keep=args.keep, keep_on_failure=args.keep_on_failure,
                          replace=args.replace, rebuild=args.rebuild, refresh_image=args.refresh_image)
    return jobs.run(ctx, args, make_jobs(recipes, ctx.out_dir, options), parallel=parallel,
                    history_keep=args.history)
