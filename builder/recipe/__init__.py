"""Recipes: find, load (with extends), validate (every problem at once, with file and line) and type them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.recipe.loader import find_recipe, list_recipe_files, load_resolved, recipes_in
from builder.recipe.model import Check, Recipe, build_recipe
from builder.recipe.problems import Problem, RecipeInvalid
from builder.recipe.rules import rule_problems, string_problems
from builder.recipe.schema import schema_problems, with_defaults

__all__ = ["Check", "Problem", "Recipe", "RecipeInvalid", "check_recipe", "find_recipe", "list_recipe_files",
           "load_recipe", "recipes_in"]


@dataclass(frozen=True)
class CheckResult:
    path: Path
    recipe: Recipe | None
    problems: list[Problem]


def check_recipe(path: Path, recipes_dir: Path) -> CheckResult:
    """Load and validate the recipe at *path*; collect every problem instead of stopping at the first."""
    doc = load_resolved(path, recipes_dir)
    problems = list(doc.problems)
    if doc.data is None or (problems and not isinstance(doc.data, dict)):
        return CheckResult(path, None, problems)

    def located(field_path, message) -> Problem:
        file, line = doc.where(field_path) or (path, 0)
        return Problem(file, line, field_path, message)

    found = schema_problems(doc.data)
    found += string_problems(doc.data)
    data = with_defaults(doc.data)
    found += rule_problems(data, path)
    problems += [located(p, m) for p, m in found]
    if problems:
        return CheckResult(path, None, _dedupe(problems))
    return CheckResult(path, build_recipe(data, path.resolve()), [])


def _dedupe(problems: list[Problem]) -> list[Problem]:
    seen: dict[tuple, Problem] = {}
    for p in problems:
        seen.setdefault((p.file, p.line, p.path, p.message), p)
    return list(seen.values())


def load_recipe(ref: str, recipes_dir: Path) -> Recipe:
    """The typed recipe *ref* (a name in *recipes_dir* or a path). Raises RecipeInvalid listing every problem."""
    result = check_recipe(find_recipe(ref, recipes_dir), recipes_dir)
    if result.recipe is None:
        raise RecipeInvalid(result.problems)
    return result.recipe
