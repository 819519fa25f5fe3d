"""The published JSON Schema is valid, describes every field, and docs/recipes.md is generated from it."""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import yaml

from builder.recipe.docs import schema_markdown
from builder.recipe.schema import recipe_schema

REPO = Path(__file__).resolve().parents[2]


def test_schema_is_valid_draft_2020_12() -> None:
    schema = json.loads((REPO / "builder" / "recipe" / "recipe.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)


def test_every_field_is_described_and_closed() -> None:
    def walk(node: dict, path: str) -> None:
        if node.get("type") == "object":
            assert node.get("additionalProperties") is False, path
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        if "items" in node:
            walk(node["items"], f"{path}[]")

    walk(recipe_schema(), "")


def test_shipped_recipes_pass_the_schema_file_alone() -> None:
    """What an editor pointing at the schema sees: shipped recipes (before extends) are schema-clean."""
    validator = jsonschema.Draft202012Validator(recipe_schema())
    for path in sorted((REPO / "recipes").glob("*.yaml")):
        errors = list(validator.iter_errors(yaml.safe_load(path.read_text())))
        assert not errors, (path, [e.message for e in errors])
        assert path.read_text().startswith("# yaml-language-server: $schema=../builder/recipe/recipe.schema.json")


def test_docs_are_current() -> None:
    assert (REPO / "docs" / "recipes.md").read_text() == schema_markdown(), (
        "docs/recipes.md is stale: run python -m builder.recipe.docs > docs/recipes.md")
