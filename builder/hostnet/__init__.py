"""Host network descriptions: a Proxmox VE node's NICs, bonds, VLANs and bridges in a few lines of YAML.

Validated like recipes (JSON Schema plus rules, every problem at once with file, line and field), typed
(model.py), rendered to /etc/network/interfaces (render.py) and brought up with ifupdown2 (ifupdown.py).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from builder.hostnet.model import HostNet, build_host
from builder.hostnet.rules import rule_problems
from builder.recipe.problems import Problem, RecipeInvalid
from builder.recipe.schema import schema_problems, with_defaults
from builder.recipe.yamlmarks import load_marked

__all__ = ["HostCheck", "HostInvalid", "HostNet", "check_host", "find_host", "host_schema", "load_host"]

HOSTS_SUBDIR = "hosts"  # host descriptions live in RECIPES/hosts/


class HostInvalid(RecipeInvalid):
    """Problems in a host description, reported exactly like a recipe's (exit status 2)."""


@dataclass(frozen=True)
class HostCheck:
    path: Path
    host: HostNet | None
    problems: list[Problem]


@functools.cache
def host_schema() -> dict[str, Any]:
    text = resources.files("builder.hostnet").joinpath("host.schema.json").read_text(encoding="utf-8")
    return json.loads(text)


def check_host(path: Path) -> HostCheck:
    """Load and validate the host description at *path*; every problem at once."""
    try:
        text = path.read_text(encoding="utf-8", errors="surrogateescape")
    except OSError as exc:
        return HostCheck(path, None, [Problem(path, 0, (), f"cannot read the host description: {exc.strerror}")])
    doc = load_marked(text, path)
    problems = list(doc.problems)
    if doc.data is None:
        return HostCheck(path, None, problems)
    if not isinstance(doc.data, dict):
        problems.append(Problem(path, 1, (), f"a host description is a mapping of fields, not a {type(doc.data).__name__}"))
        return HostCheck(path, None, problems)
    data = _empty_nics_as_mappings(doc.data)
    found = schema_problems(data, host_schema())
    found += [p for p in rule_problems(with_defaults(data, host_schema())) if p not in found]
    for field_path, message in found:
        file, line = doc.where(field_path) or (path, 0)
        problems.append(Problem(file, line, field_path, message))
    if problems:
        return HostCheck(path, None, problems)
    return HostCheck(path, build_host(with_defaults(data, host_schema()), path.resolve()), [])


def load_host(path: Path) -> HostNet:
    """The typed host description at *path*. Raises HostInvalid listing every problem."""
    result = check_host(path)
    if result.host is None:
        raise HostInvalid(result.problems)
    return result.host


def find_host(ref: str, recipes_dir: Path) -> Path:
    """Path of host description *ref*: a file, or a name in RECIPES/hosts/ (``chapter`` is hosts/chapter.yaml)."""
    as_path = Path(ref).expanduser()
    candidates = [as_path]
    if "/" not in ref:
        candidates += [recipes_dir / HOSTS_SUBDIR / f"{ref}{suffix}" for suffix in (".yaml", ".yml")]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.stem for p in (recipes_dir / HOSTS_SUBDIR).glob("*.yaml"))) or "none"
    raise HostInvalid([Problem(as_path, 0, (), f"no such host description (looked in {recipes_dir / HOSTS_SUBDIR}; "
                                               f"there: {known})")])


def _empty_nics_as_mappings(data: dict[str, Any]) -> dict[str, Any]:
    """``eno1:`` with nothing after it is a NIC without fields (YAML reads it as null)."""
    nics = data.get("nics")
    if isinstance(nics, dict):
        data = {**data, "nics": {name: {} if fields is None else fields for name, fields in nics.items()}}
    return data
