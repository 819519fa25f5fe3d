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


# Seen passing here: agent 10.0.2.15, SSH banner.
@pytest.mark.boot
@pytest.mark.optin("PVESIM_E2E", "about 3 minutes under TCG; the PVE target's own end-to-end test boots a real "
                                 "guest through the simulator anyway")
def test_agent_reports_the_real_guest_address_and_ports_are_forwarded(qsim: PveSimulator) -> None:
    """A golden image imported through the API boots in QEMU; its agent and sshd answer through the simulator."""
    from requests_toolbelt import MultipartEncoder

    from builder.image.build import build_golden_image
    from builder.image.spec import ImageSpec

    golden = build_golden_image(ImageSpec(tasks=("ssh-server", "standard", "web-server")))
    pve = Client(qsim)
    with open(golden.path, "rb") as fh:
        enc = MultipartEncoder(fields={"content": "import", "filename": ("web-golden.qcow2", fh, "application/octet-stream")})
        resp = pve.session.post(qsim.api_url + "/nodes/pve/storage/local/upload", data=enc,
                                headers={"Content-Type": enc.content_type}, timeout=600)
    pve.ok(resp.json()["data"])
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100, name="web", memory="2048", cores=2, cpu="kvm64",
                    virtio0="local-lvm:0,import-from=local:import/web-golden.qcow2,cache=none",
                    net0="virtio=BC:24:11:00:00:07,bridge=vmbr0", agent="enabled=1", boot="order=virtio0"))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    deadline = time.monotonic() + 300
    addresses: list[str] = []
    while time.monotonic() < deadline and not addresses:
        resp = pve.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
        if resp.status_code == 200:
            for iface in resp.json()["data"]["result"]:
                if iface.get("hardware-address") == "bc:24:11:00:00:07":
                    addresses = [a["ip-address"] for a in iface.get("ip-addresses", []) if a["ip-address-type"] == "ipv4"]
        else:
            assert resp.reason == "QEMU guest agent is not running", resp.reason
        time.sleep(3)
    console = (qsim.backend.console_log(100)).read_text(errors="replace")[-2000:]  # type: ignore[attr-defined]
    assert addresses == ["10.0.2.15"], f"agent never reported an address; console tail:\n{console}"
    host, port = qsim.forward(100, 22)
    banner = b""
    while time.monotonic() < deadline and not banner.startswith(b"SSH-2.0-"):
        try:
            with socket.create_connection((host, port), timeout=5) as conn:
                banner = conn.recv(64)
        except OSError:
            time.sleep(2)
    assert banner.startswith(b"SSH-2.0-"), banner
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/stop"))
    pve.ok(pve.data("delete", "/nodes/pve/qemu/100"))

