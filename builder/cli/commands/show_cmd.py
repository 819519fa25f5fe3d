"""imgbuild show: a recipe fully resolved (extends merged, defaults filled, derived values shown)."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.recipe import load_recipe
from builder.render.yamlout import dump_yaml
from builder.secrets.redact import redact


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("show", help="show a recipe fully resolved",
                       description="Show RECIPE after extends and defaults, with derived values (MAC, display, sizes).")
    p.add_argument("recipe", metavar="RECIPE", help="recipe name or path")
    p.add_argument("--json", action="store_true", help="print JSON instead of YAML")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    recipe = load_recipe(args.recipe, ctx.recipes_dir)
    data = recipe.resolved()
    ctx.out.data(data)
    if not ctx.out.as_json:
        ctx.out.stream.write(redact(dump_yaml(data, header=f"# {recipe.name}: resolved from {recipe.source}\n")))
    return 0
