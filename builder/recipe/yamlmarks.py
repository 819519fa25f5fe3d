"""Load YAML with the line of every value, so each problem can name its file and line.

Only the safe subset of YAML is accepted (no Python tags). Duplicate keys are problems, not silent overrides.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.recipe.problems import FieldPath, Problem


@dataclass
class MarkedDoc:
    """A loaded document plus where each field came from: path -> (file, line)."""

    data: Any
    marks: dict[FieldPath, tuple[Path, int]] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def where(self, path: FieldPath) -> tuple[Path, int] | None:
        """Location of *path*, or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            loc = self.marks.get(tuple(path[:end]))
            if loc:
                return loc
        return None


class _Loader(yaml.SafeLoader):
    pass


def load_marked(text: str, file: Path) -> MarkedDoc:
    doc = MarkedDoc(data=None)
    try:
        node = yaml.compose(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        msg = f"YAML syntax error: {exc.problem or exc.context}"
        doc.problems.append(Problem(file, line, (), msg))
        return doc
    except yaml.YAMLError as exc:  # reader errors (bad bytes, control characters)
        mark = getattr(exc, "position", None)
        doc.problems.append(Problem(file, 0, (), f"YAML error: {exc}"))
        return doc
    if node is None:
        doc.data = {}
        return doc
    constructor = _Loader("")
    doc.data = _build(node, (), file, doc, constructor)
    return doc


def _build(node: yaml.Node, path: FieldPath, file: Path, doc: MarkedDoc, ctor: yaml.SafeLoader) -> Any:
    doc.marks[path] = (file, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        ctor.flatten_mapping(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = ctor.construct_object(key_node, deep=True)
            if not isinstance(key, str):
                key = str(key)
            child = (*path, key)
            if key in result:
                doc.problems.append(Problem(file, key_node.start_mark.line + 1, child, "duplicate key"))
            result[key] = _build(value_node, child, file, doc, ctor)
            # A key's own line is more useful than its value's (which may start on the next line).
            doc.marks[child] = (file, key_node.start_mark.line + 1)
        return result
    if isinstance(node, yaml.SequenceNode):
        return [_build(item, (*path, i), file, doc, ctor) for i, item in enumerate(node.value)]
    try:
        return ctor.construct_object(node, deep=True)
    except yaml.constructor.ConstructorError as exc:
        doc.problems.append(Problem(file, node.start_mark.line + 1, path, f"unsupported YAML value: {exc.problem}"))
        return None
