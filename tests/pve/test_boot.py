"""`imgbuild make web-server --target sim` for real: a guest boots behind the simulator and is verified.

The simulator runs each VM it starts in QEMU (QemuBackend: the volumes it holds, TCG). The guest's
address (192.168.1.250, static, from the recipe) is not routable from this machine, so the targets
file names an SSH jump host (tests/pve/jumphost.py, its host key pinned) whose ``direct-tcpip``
channels to guest:port end at the simulator's loopback forward for that VM and port: the production
jump-host code path carries the pipeline's SSH and HTTP checks.
"""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest

from tests.pve.conftest import SECRET_ENV, cli_env, imgbuild, uploads_in, write_targets_file
from tests.pve.jumphost import JumpServer
from tests.pvesim.backends import AgentUnavailable
from tests.pvesim.qemu_backend import QemuBackend
from tests.pvesim.simulator import PveSimulator

pytestmark = pytest.mark.boot


def guest_route(sim: PveSimulator):  # type: ignore[no-untyped-def]
    """Where this machine reaches guest *host*:*port*: the simulator's forward of the VM that has *host*."""

    def resolve(host: str, port: int) -> tuple[str, int] | None:
        for vmid in sim.vm_ids():
            if not sim.backend.is_running(vmid):
                continue
            try:
                interfaces = sim.backend.agent_interfaces(vmid)
            except AgentUnavailable:
                continue
            addresses = {a.get("ip-address") for i in interfaces for a in i.get("ip-addresses") or []}
            if host in addresses:
                try:
                    return sim.forward(vmid, port)
                except KeyError:
                    return None
        return None

    return resolve


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One real make on the simulator, shared by this module's tests."""
    tmp = tmp_path_factory.mktemp("pveboot")
    sim = PveSimulator(backend=QemuBackend(accel="tcg", guest_ports=(22, 80))).start()
    try:
        with JumpServer(guest_route(sim), tmp) as jump:
            known = tmp / "jump_known_hosts"
            known.write_text(jump.known_hosts_line())
            targets = write_targets_file(tmp / "targets.yaml", sim, task_timeout=600, jump_host={
                "host": "127.0.0.1", "port": jump.port, "user": "jump", "key_file": str(jump.client_key_file),
                "known_hosts": str(known)})
            env = cli_env(tmp, IMGBUILD_TARGETS=str(targets), **{SECRET_ENV: sim.token.secret})
            proc = imgbuild("make", "web-server", "--target", "sim", env=env, timeout=1800)
            yield {"sim": sim, "jump": jump, "proc": proc, "out": tmp / "out", "env": env}
            imgbuild("destroy", "web-server", "--target", "sim", env=env, timeout=300)
    finally:
        rejected = sim.unexpected_rejections()
        sim.stop()  # stops QEMU
        if rejected:
            pytest.fail("the PVE simulator rejected: " + "; ".join(map(str, rejected)), pytrace=False)


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
