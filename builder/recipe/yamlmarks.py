"""Load YAML with the line of every value, so each problem can name its file and line.

Only the safe subset of YAML is accepted (no Python tags). Duplicate keys are problems, not silent overrides.

A recipe is a few kilobytes, so loading is bounded, in memory and in recursion, before anything is
built: the text is parsed as a stream of events first (no tree kept, no recursion) and refused
beyond MAX_EVENTS values or MAX_DEPTH levels of nesting; building the tree then counts every value
it makes, so an alias bomb (aliases of aliases, "billion laughs") stops at MAX_VALUES, and an alias
inside its own anchor (a recursive document) is named, not recursed into.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from builder.recipe.problems import FieldPath, Problem

MAX_DEPTH = 32  # recipes nest four levels deep
MAX_EVENTS = 20_000  # YAML values as written (a recipe has a few hundred)
MAX_VALUES = 20_000  # values once aliases are expanded


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


class _TooBig(Exception):
    def __init__(self, line: int, message: str) -> None:
        super().__init__(message)
        self.line = line
        self.message = message


def load_marked(text: str, file: Path) -> MarkedDoc:
    doc = MarkedDoc(data=None)
    try:
        _check_shape(text)
        node = yaml.compose(text, Loader=_Loader)
        if node is None:
            doc.data = {}
            return doc
        doc.data = _Builder(file, doc).build(node, ())
    except _TooBig as exc:
        doc.data = None
        doc.marks.clear()
        doc.problems.append(Problem(file, exc.line, (), exc.message))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 0
        msg = f"YAML syntax error: {exc.problem or exc.context}"
        doc.problems.append(Problem(file, line, (), msg))
    except yaml.YAMLError as exc:  # reader errors (bad bytes, control characters)
        doc.problems.append(Problem(file, 0, (), f"YAML error: {exc}"))
    return doc


def _check_shape(text: str) -> None:
    """Refuse a document nested deeper than MAX_DEPTH or with more than MAX_EVENTS values, from the
    parser's event stream (iterative, nothing kept) before the tree is composed (recursively)."""
    depth = events = 0
    for event in yaml.parse(text, Loader=_Loader):
        line = event.start_mark.line + 1 if event.start_mark else 0
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise _TooBig(line, f"nested more than {MAX_DEPTH} levels deep; a recipe needs a handful")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
        if isinstance(event, yaml.NodeEvent):
            events += 1
            if events > MAX_EVENTS:
                raise _TooBig(line, f"more than {MAX_EVENTS} values; a recipe holds a few hundred")


class _Builder:
    """The document's data from its composed nodes, marks recorded, aliases expanded within a budget."""

    def __init__(self, file: Path, doc: MarkedDoc) -> None:
        self.file = file
        self.doc = doc
        self.ctor = _Loader("")
        self.values = 0
        self.open: set[int] = set()  # nodes being built: meeting one again is a recursive alias
        self.merged: dict[int, tuple[int, int]] = {}  # mapping -> (entries once merged, merge depth)

    def build(self, node: yaml.Node, path: FieldPath) -> Any:
        line = node.start_mark.line + 1
        self.values += 1
        if self.values > MAX_VALUES:
            raise _TooBig(line, f"expands to more than {MAX_VALUES} values through aliases (a YAML alias "
                                "bomb?); a recipe holds a few hundred")
        if id(node) in self.open:
            raise _TooBig(line, "an alias refers to the mapping or list that contains it (a recursive "
                                "document); a recipe cannot be infinite")
        if len(path) > MAX_DEPTH:  # aliases of aliases can nest deeper than the text does
            raise _TooBig(line, f"nested more than {MAX_DEPTH} levels deep (through aliases)")
        self.doc.marks[path] = (self.file, line)
        if not isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            try:
                return self.ctor.construct_object(node, deep=True)
            except (yaml.constructor.ConstructorError, ValueError, OverflowError) as exc:
                problem = getattr(exc, "problem", None) or "a number with more digits than any field takes"
                self.doc.problems.append(Problem(self.file, line, path, f"unsupported YAML value: {problem}"))
                return None
        if node.tag not in (MAP_TAG, SEQ_TAG):  # e.g. !!python/object/apply: refused, not ignored
            self.doc.problems.append(Problem(self.file, line, path, f"unsupported YAML tag {node.tag}"))
            return None
        self.open.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
            return self._mapping(node, path)
        finally:
            self.open.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: FieldPath) -> dict[str, Any]:
        self._flatten(node)
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = self.build_key(key_node, path)
            child = (*path, key)
            if key in result:
                self.doc.problems.append(Problem(self.file, key_node.start_mark.line + 1, child, "duplicate key"))
            result[key] = self.build(value_node, child)
            # A key's own line is more useful than its value's (which may start on the next line).
            self.doc.marks[child] = (self.file, key_node.start_mark.line + 1)
        return result

    def build_key(self, key_node: yaml.Node, path: FieldPath) -> str:
        if not isinstance(key_node, yaml.ScalarNode):  # a mapping or list as a key: a string of it is useless
            self.doc.problems.append(Problem(self.file, key_node.start_mark.line + 1, path,
                                             "a key must be a plain word, not a mapping or list"))
            return f"?{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
        try:
            key = self.ctor.construct_object(key_node, deep=True)
        except (yaml.constructor.ConstructorError, ValueError, OverflowError) as exc:
            self.doc.problems.append(Problem(self.file, key_node.start_mark.line + 1, path,
                                             f"unsupported YAML key: {getattr(exc, 'problem', None) or exc}"))
            return f"?{key_node.start_mark.line + 1}:{key_node.start_mark.column + 1}"
        return key if isinstance(key, str) else str(key)

    def _flatten(self, node: yaml.MappingNode) -> None:
        """Merge keys (``<<: *defaults``), as PyYAML does, once they are known to be finite and small: no
        merge of a mapping into itself, merge chains at most MAX_DEPTH long, at most MAX_VALUES entries."""
        stack: list[tuple[yaml.MappingNode, bool]] = [(node, False)]
        on_path: set[int] = set()
        while stack:  # post-order without recursion; self.merged keeps what is known across mappings
            current, done = stack.pop()
            key = id(current)
            subs = _merge_sources(current)
            if done:
                on_path.discard(key)
                size = sum(1 for k, _ in current.value if k.tag != MERGE_TAG)
                size += sum(self.merged[id(sub)][0] for sub in subs)
                depth = 1 + max((self.merged[id(sub)][1] for sub in subs), default=0)
                line = current.start_mark.line + 1
                if size > MAX_VALUES:
                    raise _TooBig(line, f"merge keys (<<) expand it to more than {MAX_VALUES} values")
                if depth > MAX_DEPTH:
                    raise _TooBig(line, f"merge keys (<<) chained more than {MAX_DEPTH} deep")
                self.merged[key] = (size, depth)
                continue
            if key in self.merged:
                continue
            if key in on_path:
                raise _TooBig(current.start_mark.line + 1, "a merge key (<<) refers to the mapping that "
                                                           "contains it (a recursive document)")
            on_path.add(key)
            stack.append((current, True))
            stack.extend((sub, False) for sub in subs if id(sub) not in self.merged)
        self.ctor.flatten_mapping(node)


MERGE_TAG = "tag:yaml.org,2002:merge"
MAP_TAG = "tag:yaml.org,2002:map"
SEQ_TAG = "tag:yaml.org,2002:seq"


def _merge_sources(node: yaml.MappingNode) -> list[yaml.MappingNode]:
    found: list[yaml.MappingNode] = []
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            subs = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            found += [sub for sub in subs if isinstance(sub, yaml.MappingNode)]
    return found
