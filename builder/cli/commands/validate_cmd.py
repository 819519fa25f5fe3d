"""imgbuild validate: every problem in one or more recipes, each as FILE:LINE: field: message."""

from __future__ import annotations

import argparse
import sys

from builder.cli.context import Context
from builder.errors import InvalidInput
from builder.recipe import check_recipe, find_recipe, recipes_in
from builder.recipe.problems import RecipeInvalid


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check recipes and report every problem",
                       description="Check recipes (all in the recipes directory when none is named). "
                                   "Exit status 2 when any recipe is invalid.")
    p.add_argument("recipes", metavar="RECIPE", nargs="*", help="recipe names or paths")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    results = []
    bad = False
    paths = []
    for ref in args.recipes:
        try:
            paths.append(find_recipe(ref, ctx.recipes_dir))
        except RecipeInvalid as exc:
            bad = True
            results.append({"recipe": ref, "valid": False, "problems": [p.as_dict() for p in exc.problems]})
            if not ctx.out.as_json:
                print(exc.problems[0].format(), file=sys.stderr)
    if not args.recipes:
        paths = recipes_in(ctx.recipes_dir)
        if not paths:  # validating nothing must not pass (a typo in CI)
            raise InvalidInput(f"no recipes (*.yaml, *.yml) in {ctx.recipes_dir}: nothing to validate")
    for path in paths:
        result = check_recipe(path, ctx.recipes_dir)
        problems = sorted(result.problems, key=lambda p: (str(p.file), p.line))
        bad |= bool(problems)
        results.append({"recipe": path.stem, "file": str(path), "valid": not problems,
                        "problems": [p.as_dict() for p in problems]})
        for problem in problems:
            ctx.out.text(problem.format())
        if not problems:
            ctx.out.text(f"{path}: ok")
    ctx.out.data(results)
    if bad and not ctx.out.as_json:
        count = sum(len(r["problems"]) for r in results)
        print(f"imgbuild: {count} problem(s) found", file=sys.stderr)
    return 2 if bad else 0
