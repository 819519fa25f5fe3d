"""Regenerate pve-8.4-api.json from PVE's published API schema (run from the repository root).

    python tests/pvesim/data/make_schema.py ../shared/pve-api/pve-apidoc-8.4.json

Keeps only the endpoints the simulator serves (ENDPOINTS below), unchanged, as a list of
``{"path", "method", "info"}`` (the shape of ``pve-apidoc-8.4-subset.json``), and the bare list of
every (method, path) of PVE 8.4 in pve-8.4-methods.json.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ENDPOINTS: list[tuple[str, str]] = [
    # the subset imgbuild uses (pve-apidoc-8.4-subset.json)
    ("POST", "/nodes/{node}/storage/{storage}/upload"),
    ("GET", "/nodes/{node}/storage/{storage}/content"),
    ("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("POST", "/nodes/{node}/storage/{storage}/download-url"),
    ("POST", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/start"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/stop"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown"),
    ("GET", "/nodes/{node}/qemu/{vmid}/status/current"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces"),
    ("POST", "/nodes/{node}/qemu/{vmid}/template"),
    ("POST", "/nodes/{node}/qemu/{vmid}/clone"),
    ("DELETE", "/nodes/{node}/qemu/{vmid}"),
    ("GET", "/cluster/nextid"),
    ("GET", "/nodes/{node}/tasks/{upid}/status"),
    ("GET", "/nodes/{node}/tasks/{upid}/log"),
    ("POST", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/config"),
    ("GET", "/nodes/{node}/qemu/{vmid}/config"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit"),
    ("GET", "/version"),
    ("GET", "/nodes/{node}/storage"),
    ("GET", "/nodes/{node}/qemu"),
    ("POST", "/nodes/{node}/qemu/{vmid}/agent/ping"),
    ("POST", "/access/ticket"),
    # added for the simulator
    ("GET", "/nodes"),
    ("GET", "/cluster/resources"),
    ("GET", "/nodes/{node}/storage/{storage}/status"),
    ("GET", "/nodes/{node}/storage/{storage}/content/{volume}"),
    ("GET", "/nodes/{node}/tasks"),
    ("DELETE", "/nodes/{node}/tasks/{upid}"),
    ("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name"),
    ("PUT", "/nodes/{node}/qemu/{vmid}/resize"),
    ("POST", "/nodes/{node}/qemu/{vmid}/status/reset"),
    ("POST", "/nodes/{node}/qemu/{vmid}/vncproxy"),
    ("GET", "/nodes/{node}/qemu/{vmid}/vncwebsocket"),
]


def index(tree: list[dict]) -> dict[tuple[str, str], dict]:
    found: dict[tuple[str, str], dict] = {}

    def walk(node: dict) -> None:
        for method, info in (node.get("info") or {}).items():
            found[(method, node["path"])] = info
        for child in node.get("children") or []:
            walk(child)

    for top in tree:
        walk(top)
    return found


def main(source: str) -> None:
    full = index(json.loads(Path(source).read_text()))
    out = [{"path": path, "method": method, "info": full[(method, path)]} for method, path in ENDPOINTS]
    dest = Path(__file__).with_name("pve-8.4-api.json")
    dest.write_text(json.dumps(out, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{dest}: {len(out)} endpoints")
    every = Path(__file__).with_name("pve-8.4-methods.json")
    every.write_text(json.dumps(sorted([m, p] for m, p in full), separators=(",", ":")) + "\n")
    print(f"{every}: {len(full)} methods (names only, to tell 'not simulated' from 'not in PVE')")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "../shared/pve-api/pve-apidoc-8.4.json")
