"""imgbuild make: render, build, image, boot and verify a recipe; write out/NAME/report.json."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.cli.jobs import print_summary, run_job
from builder.pipeline.make import MakeOptions, make
from builder.progress import ConsoleProgress
from builder.recipe import load_recipe
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("make", help="build, boot and verify a VM from a recipe",
                       description="Run the whole job for RECIPE: render -> build -> image -> boot -> verify. "
                                   "Writes OUT/NAME/report.json and exits non-zero if any check failed. "
                                   "By default the verified VM is shut down cleanly; --keep leaves it running. "
                                   "Like make(1), an existing VM built from the same inputs (seed, image, "
                                   "installer, hardware) is not rebuilt: it is started and verified again; "
                                   "--rebuild makes a new one. A desktop check reads the screen with QEMU's screendump "
                                   "locally and through the VM's VNC console (vncproxy, needs VM.Console) on Proxmox VE.")
    p.add_argument("recipe", metavar="RECIPE")
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
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    target = open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)
    options = MakeOptions(method=args.method, keep=args.keep, keep_on_failure=args.keep_on_failure,
                          replace=args.replace, rebuild=args.rebuild,
                          refresh_image=args.refresh_image)
    report_path = ctx.out_dir / recipe.name / "report.json"
    report = run_job(lambda: make(recipe, ctx.out_dir, target, options, ConsoleProgress()), report_path)
    print_summary(report, recipe.name, report_path, keep=args.keep)
    return 0
