"""imgbuild list: the recipes in the recipes directory."""

from __future__ import annotations

import argparse
from typing import Any

from builder.cli.context import Context
from builder.recipe import check_recipe, recipes_in


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("list", help="list recipes", description="List the recipes in the recipes directory.")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    rows: list[dict[str, Any]] = []
    for path in recipes_in(ctx.recipes_dir):
        result = check_recipe(path, ctx.recipes_dir)
        r = result.recipe
        rows.append({
            "name": r.name if r else path.stem,
            "file": str(path),
            "valid": r is not None,
            "release": r.release if r else None,
            "network": r.network.mode if r else None,
            "tasks": list(r.tasks) if r else [],
            "description": r.description if r else f"INVALID ({len(result.problems)} problem(s)): imgbuild validate {path.stem}",
        })
    ctx.out.data(rows)
    ctx.out.table([(x["name"], x["release"] or "-", x["network"] or "-", x["description"]) for x in rows],
                  header=("NAME", "RELEASE", "NETWORK", "DESCRIPTION"))
    if not rows:
        ctx.out.text(f"no recipes in {ctx.recipes_dir}")
    return 0
