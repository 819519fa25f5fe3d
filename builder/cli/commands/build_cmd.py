"""imgbuild build: render (if needed) and write seed.iso, installer.iso and SHA256SUMS into out/NAME/."""

from __future__ import annotations

import argparse
from pathlib import Path

from builder.cli.context import Context
from builder.iso.installer import build_recipe_isos
from builder.outdir import recipe_lock
from builder.progress import ConsoleProgress
from builder.recipe import Recipe, load_recipe
from builder.render.write import render_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("build", help="build the seed ISO and the unattended installer ISO",
                       description="Render RECIPE and build OUT/NAME/seed.iso (cloud-init NoCloud, label CIDATA), "
                                   "OUT/NAME/installer.iso (Debian netboot installer with the preseed, BIOS and "
                                   "UEFI) and OUT/NAME/SHA256SUMS.")
    p.add_argument("recipe", metavar="RECIPE")
    p.add_argument("--base-iso", metavar="PATH_OR_URL",
                   help="remaster this official Debian netinst/DVD ISO instead of using the netboot files")
    p.add_argument("--base-iso-sums", metavar="URL", help="SHA256SUMS URL for a --base-iso URL "
                   "(default: SHA256SUMS beside it)")
    p.add_argument("--log-host", metavar="HOST:PORT",
                   help="make the installer send its syslog to HOST:PORT (log_host/log_port on the kernel line)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    with recipe_lock(ctx.out_dir, recipe.name, f"build {recipe.name}"):
        return build(ctx, args, recipe)


def build(ctx: Context, args: argparse.Namespace, recipe: Recipe) -> int:
    progress = ConsoleProgress()
    rendered = render_recipe(recipe, ctx.out_dir)
    kernel_args: list[str] = []
    if args.log_host:
        host, _, port = args.log_host.rpartition(":")
        kernel_args = [f"log_host={host}", f"log_port={port}"]
    base_iso = args.base_iso or recipe.install.base_iso
    sums = args.base_iso_sums
    if base_iso and base_iso.startswith(("http://", "https://")):
        sums = sums or base_iso.rsplit("/", 1)[0] + "/SHA256SUMS"
    elif base_iso and not args.base_iso:
        base_iso = str(recipe.source.parent / Path(base_iso).expanduser())
    isos = build_recipe_isos(rendered.out_dir, release=recipe.release, mirror=recipe.mirror.url,
                             proxy=recipe.mirror.proxy, base_iso=base_iso, base_iso_sums=sums,
                             kernel_args=kernel_args, progress=progress)
    result = {"recipe": recipe.name, "seed": str(isos.seed), "installer": str(isos.installer),
              "sha256sums": str(isos.sha256sums), "sha256": dict(isos.sha256)}
    ctx.out.data(result)
    for name, digest in sorted(isos.sha256.items()):
        ctx.out.text(f"{rendered.out_dir / name}  sha256 {digest}")
    return 0
