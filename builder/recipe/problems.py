"""A problem found in a recipe: where it is (file, line, field path) and what is wrong."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from builder.errors import InvalidInput

FieldPath = tuple[str | int, ...]


def dotted(path: FieldPath) -> str:
    return ".".join(str(p) for p in path) or "(recipe)"


@dataclass(frozen=True)
class Problem:
    file: Path
    line: int  # 1-based; 0 when unknown
    path: FieldPath
    message: str

    def display_file(self, base: Path | None = None) -> str:
        base = base or Path.cwd()
        try:
            return str(self.file.resolve().relative_to(base.resolve()))
        except ValueError:
            return str(self.file)

    def format(self, base: Path | None = None) -> str:
        loc = f"{self.display_file(base)}:{self.line}" if self.line else self.display_file(base)
        return f"{loc}: {dotted(self.path)}: {self.message}" if self.path else f"{loc}: {self.message}"

    def as_dict(self, base: Path | None = None) -> dict:
        return {"file": self.display_file(base), "line": self.line, "field": dotted(self.path), "message": self.message}


class RecipeInvalid(InvalidInput):
    """One or more problems in a recipe. Exit status 2; each problem printed on its own line."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (str(p.file), p.line, dotted(p.path)))
        first = self.problems[0].format() if self.problems else "invalid recipe"
        more = f" (and {len(self.problems) - 1} more)" if len(self.problems) > 1 else ""
        super().__init__(first + more, detail="\n".join(p.format() for p in self.problems[1:]))
