"""The client the PVE target will use: proxmoxer against the simulator."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from tests.pvesim.simulator import PveSimulator


@pytest.fixture
def px(pve_sim: PveSimulator) -> ProxmoxAPI:
    user, tokenid = pve_sim.token.full_id.split("!")
    return ProxmoxAPI(pve_sim.host, port=pve_sim.port, user=user, token_name=tokenid,
                      token_value=pve_sim.token.secret, verify_ssl=str(pve_sim.ca_file), timeout=30)


def test_python_true_is_refused_as_pve_does(px: ProxmoxAPI, pve_sim: PveSimulator) -> None:
    with pve_sim.expecting_rejection("schema"), pytest.raises(ResourceException) as exc:
        px.nodes("pve").qemu.post(vmid=100, start=True)
    assert exc.value.status_code == 400
    assert exc.value.errors == {"start": "type check ('boolean') failed - got 'True'"}
    px.nodes("pve").qemu.post(vmid=100, start=0)


def test_bad_mac_is_refused(px: ProxmoxAPI, pve_sim: PveSimulator) -> None:
    with pve_sim.expecting_rejection("schema"), pytest.raises(ResourceException) as exc:
        px.nodes("pve").qemu.post(vmid=100, net0="virtio=01:24:11:00:00:01,bridge=vmbr0")
    assert "net0.macaddr: invalid format - value does not look like a valid unicast MAC address" in exc.value.errors["net0"]


def test_streamed_upload_and_task_helper(px: ProxmoxAPI, pve_sim: PveSimulator, tmp_path: Path) -> None:
    iso = tmp_path / "seed.iso"
    iso.write_bytes(os.urandom(11 << 20))  # over proxmoxer's 10 MiB threshold: streamed with toolbelt
    with open(iso, "rb") as fh:
        upid = px.nodes("pve").storage("local").upload.post(
            content="iso", filename=fh, **{"checksum-algorithm": "sha256", "checksum": hashlib.sha256(iso.read_bytes()).hexdigest()})  # noqa: E501
    from proxmoxer.tools import Tasks

    status = Tasks.blocking_status(px, upid, timeout=30)
    assert status and status["exitstatus"] == "OK"
    assert [c["volid"] for c in px.nodes("pve").storage("local").content.get()] == ["local:iso/seed.iso"]


def test_refusals_surface_as_resource_exceptions(px: ProxmoxAPI, pve_sim: PveSimulator) -> None:
    from proxmoxer.tools import Tasks

    assert Tasks.blocking_status(px, px.nodes("pve").qemu.post(vmid=100, agent="enabled=1"), timeout=30)["exitstatus"] == "OK"
    with pytest.raises(ResourceException) as exc:
        px.nodes("pve").qemu(100).agent("network-get-interfaces").get()
    assert exc.value.status_code == 500 and exc.value.content == "VM 100 is not running"
    # proxmoxer's task helper does not raise on a failed task: the exitstatus tells
    pve_sim.faults.fail_task("qmstart", message="start failed")
    status = Tasks.blocking_status(px, px.nodes("pve").qemu(100).status.start.post(), timeout=30)
    assert status["status"] == "stopped" and status["exitstatus"] == "start failed"
    # ...and returns None when the task outlives its timeout
    pve_sim.faults.hang_task("qmstart")
    assert Tasks.blocking_status(px, px.nodes("pve").qemu(100).status.start.post(), timeout=1, polling_interval=0.2) is None
