"""Find recipe files and resolve ``extends``: a child's mappings merge over its parent's, key by key.

A recipe file is read only when it is a regular file of at most MAX_RECIPE_BYTES in UTF-8; ``extends``
names another recipe (a name, or a path ending in .yaml/.yml), never an arbitrary file, and a chain of
parents is at most MAX_EXTENDS long.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

from builder.errors import InvalidInput
from builder.recipe.problems import FieldPath, Problem, RecipeInvalid
from builder.recipe.yamlmarks import MarkedDoc, load_marked

RECIPE_SUFFIXES = (".yaml", ".yml")
MAX_RECIPE_BYTES = 256 * 1024  # recipes are a few kilobytes
MAX_EXTENDS = 16


def list_recipe_files(recipes_dir: Path) -> list[Path]:
    if not recipes_dir.is_dir():
        return []
    return sorted(p for p in recipes_dir.iterdir() if p.suffix in RECIPE_SUFFIXES and p.is_file())


def recipes_in(recipes_dir: Path) -> list[Path]:
    """The recipe files of *recipes_dir*; a directory that does not exist is an error, not an empty list."""
    if not recipes_dir.is_dir():
        raise InvalidInput(f"the recipes directory {recipes_dir} does not exist (or is not a directory)",
                           detail="name it with --recipes-dir or $IMGBUILD_RECIPES")
    return list_recipe_files(recipes_dir)


def find_recipe(ref: str, recipes_dir: Path, *, relative_to: Path | None = None) -> Path:
    """Path of recipe *ref*: a file path, or a name looked up in *recipes_dir*."""
    candidates: list[Path] = []
    as_path = Path(ref).expanduser()
    if relative_to is not None and not as_path.is_absolute():
        candidates.append(relative_to / as_path)
    candidates.append(as_path)
    if "/" not in ref:
        candidates += [recipes_dir / f"{ref}{suffix}" for suffix in RECIPE_SUFFIXES]
        if relative_to is not None:
            candidates += [relative_to / f"{ref}{suffix}" for suffix in RECIPE_SUFFIXES]
    for candidate in candidates:
        if candidate.is_file() and candidate.resolve().suffix in RECIPE_SUFFIXES:
            return candidate
    if as_path.is_file():  # say why rather than "no such recipe"; never read it (it may be /etc/shadow)
        raise RecipeInvalid([Problem(Path(ref), 0, (), "not a recipe: a recipe file's name ends in .yaml or .yml")])
    known = ", ".join(p.stem for p in list_recipe_files(recipes_dir)) or "none"
    raise RecipeInvalid(
        [Problem(Path(ref), 0, (), f"no such recipe (looked in {recipes_dir}; recipes there: {known})")]
    )


def load_resolved(path: Path, recipes_dir: Path) -> MarkedDoc:
    """Load *path* and its ``extends`` chain into one merged document (``extends`` removed).

    ``name`` is never inherited: it is the child's own ``name`` or its file name.
    Problems (syntax errors, missing parents, cycles) are collected in the returned document.
    """
    doc = _load_chain(path.resolve(), recipes_dir, seen=())
    if isinstance(doc.data, dict):
        doc.data.pop("extends", None)
    return doc


def read_recipe_text(path: Path) -> tuple[str | None, Problem | None]:
    """The text of recipe file *path*, or the problem that stops it being read."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return None, Problem(path, 0, (), "not a regular file")
            raw = fh.read(MAX_RECIPE_BYTES + 1)
    except OSError as exc:
        return None, Problem(path, 0, (), f"cannot read: {exc.strerror or exc}")
    if len(raw) > MAX_RECIPE_BYTES:
        return None, Problem(path, 0, (), f"larger than {MAX_RECIPE_BYTES // 1024} KiB; a recipe is a few kilobytes")
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        return None, Problem(path, line, (), f"not UTF-8 text (byte {exc.start}: {raw[exc.start:exc.start + 1]!r})")


def _load_chain(path: Path, recipes_dir: Path, seen: tuple[Path, ...]) -> MarkedDoc:
    text, problem = read_recipe_text(path)
    if text is None:
        assert problem is not None
        return MarkedDoc(data=None, problems=[problem])
    doc = load_marked(text, path)
    if doc.problems and doc.data is None:
        return doc
    if not isinstance(doc.data, dict):
        doc.problems.append(Problem(path, 1, (), f"a recipe must be a mapping of fields, not a {type(doc.data).__name__}"))
        doc.data = {}
        return doc
    own_name = doc.data.get("name", path.stem)
    parent_ref = doc.data.get("extends")
    if parent_ref is None:
        doc.data.setdefault("name", own_name)
        return doc
    line = doc.marks.get(("extends",), (path, 0))[1]
    if not isinstance(parent_ref, str):
        doc.problems.append(Problem(path, line, ("extends",), "expected the name of a recipe"))
        return doc
    if "/" in parent_ref and not parent_ref.endswith(RECIPE_SUFFIXES):  # e.g. /etc/shadow: never read it
        doc.problems.append(Problem(path, line, ("extends",), "must name a recipe: a name, or a path to a "
                                                              ".yaml or .yml file"))
        return doc
    try:
        parent_path = find_recipe(parent_ref, recipes_dir, relative_to=path.parent).resolve()
    except RecipeInvalid as exc:
        why = exc.problems[0].message
        why = f"is {why}" if why.startswith("not a recipe") else f"not found in {recipes_dir}"
        doc.problems.append(Problem(path, line, ("extends",), f"recipe {parent_ref!r} {why}"))
        return doc
    if parent_path in seen or parent_path == path:
        chain = " -> ".join(p.stem for p in (*seen, path, parent_path))
        doc.problems.append(Problem(path, line, ("extends",), f"extends cycle: {chain}"))
        return doc
    if len(seen) + 1 >= MAX_EXTENDS:
        doc.problems.append(Problem(path, line, ("extends",), f"more than {MAX_EXTENDS} recipes in one extends "
                                                              "chain"))
        return doc
    parent = _load_chain(parent_path, recipes_dir, (*seen, path))
    merged = _merge(parent, doc)
    merged.data["name"] = own_name
    if "name" not in doc.data:
        merged.marks.pop(("name",), None)
    merged.data.pop("extends", None)
    return merged


def _merge(parent: MarkedDoc, child: MarkedDoc) -> MarkedDoc:
    data = _merge_values(parent.data if isinstance(parent.data, dict) else {}, child.data)
    marks = dict(parent.marks)
    # Wherever the child replaces a non-mapping value, the parent's marks below it no longer apply.
    for path in child.marks:
        if not isinstance(_get(child.data, path), dict):
            for stale in [p for p in marks if p[: len(path)] == path and len(p) > len(path)]:
                del marks[stale]
    marks.update(child.marks)
    return MarkedDoc(data=data, marks=marks, problems=parent.problems + child.problems)


def _merge_values(base: Any, over: Any) -> Any:
    if isinstance(base, dict) and isinstance(over, dict):
        out = dict(base)
        for key, value in over.items():
            out[key] = _merge_values(base[key], value) if key in base else value
        return out
    return over


def _get(data: Any, path: FieldPath) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data
