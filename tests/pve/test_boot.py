"""`imgbuild make web-server --target sim` for real: a guest boots behind the simulator and is verified.

The simulator runs each VM it starts in QEMU; the guest's address (192.168.1.250, static, from the recipe)
is reached through an SSH jump host (tests/pve/simboot.py): the production jump-host code path carries the
pipeline's SSH and HTTP checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.pve.conftest import uploads_in
from tests.pve.simboot import made_on_sim

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real make on the simulator, shared by this module's tests."""
    with made_on_sim(tmp_path_factory.mktemp("pveboot"), "web-server") as made:
        yield {"sim": made.sim, "jump": made.jump, "proc": made.proc, "out": made.out, "env": made.env}


def test_make_web_server_on_the_simulator_verifies_for_real(booted: dict) -> None:
    proc, sim = booted["proc"], booted["sim"]
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "web-server: verified on sim" in proc.stdout
    report = json.loads((booted["out"] / "web-server" / "report.json").read_text())
    assert report["ok"] and report["target"] == "sim"
    assert report["vm"]["address"] == "192.168.1.250"
    assert {c["check"]: c["ok"] for c in report["checks"]} == {
        "ssh": True, "service apache2": True, "http :80/": True}
    assert report["vm"]["state"] == "shut down"
    # the checks really went through the jump host to the guest's address
    assert ("192.168.1.250", 22) in booted["jump"].opened and ("192.168.1.250", 80) in booted["jump"].opened
    assert "ssh" in report["access"] and "127.0.0.1" in report["access"]["ssh"]
    # uploads: the golden image (import) and the seed; afterwards the seed is gone, the VM stopped
    names = [r.params["filename"] for r in uploads_in(sim)]
    assert len(names) == 2 and names[0].endswith(".qcow2") and names[1].startswith("web-server-seed-")
    assert sim.volume_ids("iso") == []
    (vm,) = sim.vms()
    assert not vm["running"] and vm["config"]["ide2"].startswith("none,media=cdrom")
    assert sim.token.secret not in proc.stdout + proc.stderr
