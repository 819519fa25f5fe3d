"""Refresh the simulator's copies of PVE's API schemas (run from the repository root).

    python tests/pvesim/data/make_schema.py ../shared/pve-api

Each ``pve-apidoc-VERSION.json`` of the project's shared data (PVE's own API viewer data, see README.md
here) is copied unchanged in content, re-serialised with sorted keys and xz-compressed, to
``pve-VERSION-apidoc.json.xz``: the whole tree, so the simulator knows every method of that version
(a route it does not simulate is told apart from one PVE does not have), and a fresh clone of the
repository runs the tests without the shared directory.
"""

from __future__ import annotations

import json
import lzma
import sys
from pathlib import Path

VERSIONS = ("8.4", "9.1")


def main(source: str) -> None:
    for version in VERSIONS:
        tree = json.loads((Path(source) / f"pve-apidoc-{version}.json").read_text())
        dest = Path(__file__).with_name(f"pve-{version}-apidoc.json.xz")
        data = json.dumps(tree, sort_keys=True, separators=(",", ":")).encode()
        dest.write_bytes(lzma.compress(data, preset=9 | lzma.PRESET_EXTREME))
        print(f"{dest}: {len(data)} bytes of JSON, {dest.stat().st_size} compressed")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/pve-api")
