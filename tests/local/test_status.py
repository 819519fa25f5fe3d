"""imgbuild status on the local target: every VM and template under OUT, with the last job of each."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from builder.targets.base import DiskSpec, NicSpec, VMSpec
from builder.targets.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]


def status(out: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXMOX_")}
    env["PYTHONPATH"] = str(REPO)
    return subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(out), "status", *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def test_status_shows_vms_templates_and_the_last_job(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert "no VMs made by imgbuild on local" in status(out).stdout
    target = LocalTarget(out)
    for i, name in enumerate(("web-server", "golden")):
        target.create_vm(VMSpec(name=name, disks=(DiskSpec(1 << 30),), nics=(NicSpec(f"52:54:00:00:00:0{i}"),)))
    target.make_template(target.find_vm("golden"))  # type: ignore[arg-type]
    (out / "web-server" / "report.json").write_text(json.dumps({
        "target": "local", "ok": False, "finished": "2026-11-28T07:00:00+00:00", "error": "1 check(s) failed: http",
        "checks": [{"check": "ssh", "ok": True}, {"check": "http", "ok": False}], "vm": {"address": "10.0.2.15"}}))
    (out / "rendered-only").mkdir()  # a recipe that was only rendered has no VM

    rows = {r["name"]: r for r in json.loads(status(out, "--json").stdout)["vms"]}
    assert set(rows) == {"web-server", "golden"}
    assert rows["golden"]["state"] == "template" and rows["golden"]["last_job"] is None
    assert rows["web-server"]["state"] == "stopped" and rows["web-server"]["address"] == "10.0.2.15"
    assert rows["web-server"]["last_job"]["checks_passed"] == 1 and not rows["web-server"]["last_job"]["ok"]
    text = status(out).stdout
    assert "FAILED 2026-11-28T07:00:00Z: 1 check(s) failed: http" in text
