"""docs/recipes.md, generated from recipe.schema.json so the reference cannot drift from the code.

Regenerate with: python -m builder.recipe.docs > docs/recipes.md  (a test checks it is current)
"""

from __future__ import annotations

import json
from typing import Any

from builder.recipe.schema import recipe_schema

HEADER = """\
# Recipe reference

<!-- Generated from builder/recipe/recipe.schema.json by `python -m builder.recipe.docs`; do not edit. -->

A recipe is a YAML file in `recipes/`. Point your editor at the JSON Schema for completion and checks:
`# yaml-language-server: $schema=../builder/recipe/recipe.schema.json` (first line of the shipped recipes).
`imgbuild validate` reports every problem at once as `FILE:LINE: field.path: message`;
`imgbuild show NAME` prints a recipe fully resolved.

Sizes use binary units (`8G` is 8 GiB). Unknown fields are errors. Values that reach the preseed, a shell
command or a YAML file are checked: host names follow RFC 1123, names and paths are ASCII, no field may hold a
control character (late_commands may span lines).

"""


def _type(schema: dict[str, Any]) -> str:
    if "enum" in schema:
        return " \\| ".join(f"`{'null' if v is None else v}`" for v in schema["enum"])
    kind = schema.get("type", "")
    if isinstance(kind, list):
        return " or ".join(kind)
    if kind == "array":
        return f"list of {_type(schema.get('items', {})) or 'items'}"
    return kind


def _rows(schema: dict[str, Any], prefix: str) -> list[str]:
    rows = []
    required = set(schema.get("required", []))
    for name, sub in schema.get("properties", {}).items():
        path = f"{prefix}{name}"
        default = "required" if name in required else (
            f"`{json.dumps(sub['default'])}`" if "default" in sub else "-")
        desc = sub.get("description", "").replace("|", "\\|")
        rows.append(f"| `{path}` | {_type(sub)} | {default} | {desc} |")
        if sub.get("type") == "object":
            rows += _rows(sub, f"{path}.")
            extra = sub.get("additionalProperties")
            if isinstance(extra, dict) and "properties" in extra:  # a mapping of names (host bridges, bonds ...)
                rows += _rows(extra, f"{path}.NAME.")
        elif sub.get("type") == "array" and sub.get("items", {}).get("type") == "object":
            rows += _rows(sub["items"], f"{path}[].")
    return rows


def schema_markdown(schema: dict[str, Any] | None = None, header: str = HEADER) -> str:
    """The field reference of *schema* (the recipe schema by default) under *header*."""
    schema = schema or recipe_schema()
    lines = [header.rstrip("\n"), "", schema["description"], "",
             "| Field | Type | Default | Meaning |", "| --- | --- | --- | --- |"]
    lines += _rows(schema, "")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(schema_markdown(), end="")
