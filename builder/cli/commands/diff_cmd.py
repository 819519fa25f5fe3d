"""imgbuild diff A B: the packages added, removed, upgraded and downgraded between two golden images."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.pipeline.jobs import diff_images
from builder.targets.base import Target
from builder.targets.select import add_target_options, open_target


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("diff", help="what changed in the packages between two images, releases or reports",
                       description="Compare the package manifests of A and B and list the packages added, removed, "
                                   "upgraded and downgraded (versions in Debian's order). Each of A and B is a golden "
                                   "image (.qcow2, with its .manifest.json beside it), a manifest, a report "
                                   "(OUT/NAME/report.json or a file under OUT/NAME/history/), or a release name "
                                   "(RECIPE-YYYYMMDD-N, its manifest read from the target). Two images of "
                                   "different Debian releases are refused as unrelated. Exit status 0 either way; "
                                   "2 when A or B cannot be read.")
    p.add_argument("a", metavar="A")
    p.add_argument("b", metavar="B")
    p.add_argument("--json", action="store_true", help="print JSON")
    add_target_options(p)
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    def target() -> Target:  # opened only when A or B names a release
        return open_target(args.target, ctx.out_dir, accel=args.accel, insecure=args.insecure)

    result = diff_images(args.a, args.b, ctx.out_dir, target)
    ctx.out.data(result.as_dict())
    ctx.out.text(f"{result.a.ref} ({result.a.label}, {len(result.a.manifest.packages)} packages) -> "
                 f"{result.b.ref} ({result.b.label}, {len(result.b.manifest.packages)} packages)")
    ctx.out.text(result.diff.summary())
    for line in result.diff.lines():
        ctx.out.text(f"  {line}")
    return 0
