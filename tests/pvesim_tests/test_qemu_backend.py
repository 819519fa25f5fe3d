"""QemuBackend: a simulated VM really runs in QEMU on the simulator's own volumes."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from builder.targets.local.qmp import QMPClient
from tests.pvesim.qemu_backend import QemuBackend
from tests.pvesim.simulator import PveSimulator
from tests.pvesim_tests.conftest import Client, upload


@pytest.fixture
def qsim(pve_sim_factory) -> Iterator[PveSimulator]:  # type: ignore[no-untyped-def]
    yield pve_sim_factory(backend=QemuBackend(accel="tcg", guest_ports=(22, 80)))


@pytest.mark.boot
def test_vm_runs_in_qemu_with_its_volumes_nic_and_agent_channel(qsim: PveSimulator) -> None:
    pve = Client(qsim)
    pve.ok(upload(pve, "seed.iso", b"\0" * 2048 * 16).json()["data"])
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100, name="q", memory="256", cores=1,
                    virtio0="local-lvm:1,cache=none", ide2="local:iso/seed.iso,media=cdrom",
                    net0="virtio=BC:24:11:00:00:05,bridge=vmbr0", agent="enabled=1",
                    ipconfig0="ip=192.168.1.250/24,gw=192.168.1.1", boot="order=virtio0;ide2"))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    status = pve.data("get", "/nodes/pve/qemu/100/status/current")
    assert status["status"] == "running" and status["pid"] > 0
    backend = qsim.backend
    assert isinstance(backend, QemuBackend)
    # QEMU has the simulator's volume and ISO open, and the NIC's MAC
    with QMPClient(backend.workdir / "100" / "qmp.sock").connect(wait=5) as qmp:
        blocks = json.dumps(qmp.execute("query-block"))
        nic = qmp.hmp("info network")
    assert str(qsim.volume_path("local-lvm:vm-100-disk-0")) in blocks
    assert str(qsim.volume_path("local:iso/seed.iso")) in blocks
    assert "bc:24:11:00:00:05" in nic.lower()
    # loopback forwards to the guest's ports exist (nothing listens in this guest: connect is accepted by slirp)
    host, port = qsim.forward(100, 22)
    with socket.create_connection((host, port), timeout=5):
        pass
    # no OS in this guest, so no agent: PVE's error
    resp = pve.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
    assert (resp.status_code, resp.reason) == (500, "QEMU guest agent is not running")
    resp = pve.delete("/nodes/pve/qemu/100")
    assert resp.reason == "VM 100 is running - destroy failed"
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/stop"))
    deadline = time.monotonic() + 10
    while backend.is_running(100) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert pve.data("get", "/nodes/pve/qemu/100/status/current")["status"] == "stopped"
    with pytest.raises(KeyError):
        qsim.forward(100, 22)
    pve.ok(pve.data("delete", "/nodes/pve/qemu/100"))
    assert qsim.volume_ids("images") == []
