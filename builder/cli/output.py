"""One place that prints results: human text on stdout, or JSON with --json. Progress goes to stderr."""

from __future__ import annotations

import json
import sys
from typing import Any, TextIO

from builder.secrets.redact import redact, redact_data


class Output:
    def __init__(self, as_json: bool = False, stream: TextIO | None = None) -> None:
        self.as_json = as_json
        self.stream = stream or sys.stdout

    def text(self, line: str = "") -> None:
        if not self.as_json:
            print(redact(line), file=self.stream)

    def data(self, payload: Any) -> None:
        """Emit the command's JSON result (only with --json)."""
        if self.as_json:
            json.dump(redact_data(json.loads(json.dumps(payload, default=str))), self.stream, indent=2, sort_keys=False)
            self.stream.write("\n")

    def table(self, rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
        if self.as_json:
            return
        widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
        for row in [header, *rows]:
            print(redact("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip()), file=self.stream)
