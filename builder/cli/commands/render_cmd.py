"""imgbuild render: write the preseed and cloud-init seed files for a recipe into out/NAME/."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.outdir import recipe_lock
from builder.recipe import load_recipe
from builder.render.write import render_recipe


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("render", help="render preseed.cfg and the cloud-init seed files",
                       description="Render RECIPE into OUT/NAME/: preseed.cfg, user-data, meta-data, network-config "
                                   "and known_hosts. Keys are generated once and kept, so re-rendering is stable.")
    p.add_argument("recipes", metavar="RECIPE", nargs="+", help="recipe names or paths")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    results = []
    for ref in args.recipes:
        recipe = load_recipe(ref, ctx.recipes_dir)
        with recipe_lock(ctx.out_dir, recipe.name, f"render {recipe.name}"):
            rendered = render_recipe(recipe, ctx.out_dir)
        results.append({"recipe": rendered.recipe.name, "out_dir": str(rendered.out_dir),
                        "files": {k: str(v) for k, v in rendered.files.items()},
                        "changed": list(rendered.changed)})
        state = f"{len(rendered.changed)} changed" if rendered.changed else "unchanged"
        ctx.out.text(f"{rendered.recipe.name}: rendered into {rendered.out_dir}/ ({state})")
        for name, path in rendered.files.items():
            ctx.out.text(f"  {path}{'  (changed)' if name in rendered.changed else ''}")
    ctx.out.data(results)
    return 0
