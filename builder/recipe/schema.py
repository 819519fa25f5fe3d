"""The recipe JSON Schema: the one declaration of every field (type, default, description).

Validation, defaults, ``imgbuild show`` and docs/recipes.md all come from ``recipe.schema.json``.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
from importlib import resources
from typing import Any

import jsonschema

from builder.recipe.problems import FieldPath


@functools.cache
def recipe_schema() -> dict[str, Any]:
    text = resources.files("builder.recipe").joinpath("recipe.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def _suggest(word: str, choices: list[str]) -> str:
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def _type_name(value: Any) -> str:
    return {dict: "mapping", list: "list", str: "string", bool: "boolean", int: "integer", float: "number"}.get(
        type(value), "null" if value is None else type(value).__name__
    )


def schema_problems(data: Any, schema: dict[str, Any] | None = None) -> list[tuple[FieldPath, str]]:
    """Every schema violation in *data* as (field path, message), with suggestions for typos.

    *schema* defaults to the recipe schema; host descriptions (builder/hostnet) bring their own."""
    validator = jsonschema.Draft202012Validator(schema or recipe_schema())
    found: list[tuple[FieldPath, str]] = []
    for error in validator.iter_errors(data):
        path: FieldPath = tuple(error.absolute_path)
        kind = error.validator
        if kind == "additionalProperties" and isinstance(error.instance, dict):
            known = sorted(error.schema.get("properties", {}))
            for key in sorted(set(error.instance) - set(known)):
                hint = _suggest(key, known) or f" (valid here: {', '.join(known)})"
                found.append(((*path, key), f"unknown field{hint}"))
        elif kind == "enum":
            choices = [c for c in error.validator_value]
            shown = ", ".join("null" if c is None else str(c) for c in choices)
            hint = _suggest(str(error.instance), [str(c) for c in choices]) if isinstance(error.instance, str) else ""
            found.append((path, f"{error.instance!r} is not a valid choice{hint} (choose one of: {shown})"))
        elif kind == "required":
            missing = error.message.split("'")[1] if "'" in error.message else str(error.validator_value)
            found.append(((*path, missing), "required field is missing"))
        elif kind == "type":
            wanted = error.validator_value
            wanted_text = " or ".join(wanted) if isinstance(wanted, list) else wanted
            found.append((path, f"expected {wanted_text}, got {_type_name(error.instance)} {error.instance!r}"))
        elif kind in ("minimum", "maximum"):
            found.append((path, f"{error.instance!r} is out of range ({kind} {error.validator_value})"))
        elif kind == "pattern":
            found.append((path, f"{error.instance!r} is not valid here"))
        elif kind == "uniqueItems":
            found.append((path, "items must be unique"))
        elif kind == "minItems":
            found.append((path, f"needs at least {error.validator_value} item(s)"))
        else:
            found.append((path, error.message))
    return found


def with_defaults(data: dict[str, Any], schema: dict[str, Any] | None = None) -> dict[str, Any]:
    """A copy of (valid) *data* with every schema default filled in, recursively (the recipe schema unless
    another *schema* is given)."""
    return _fill(copy.deepcopy(data), schema or recipe_schema())


def _fill(value: Any, schema: dict[str, Any]) -> Any:
    if isinstance(value, dict):
        properties = schema.get("properties", {})
        for key, sub in properties.items():
            if key not in value and "default" in sub:
                value[key] = copy.deepcopy(sub["default"])
            if key in value:
                value[key] = _fill(value[key], sub)
        extra = schema.get("additionalProperties")
        if isinstance(extra, dict):  # a mapping of names to objects of one shape (host bridges, bonds ...)
            for key in value:
                if key not in properties:
                    value[key] = _fill(value[key], extra)
    elif isinstance(value, list) and "items" in schema:
        value = [_fill(item, schema["items"]) for item in value]
    return value
