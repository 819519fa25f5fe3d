"""Fault injection: each fault is observable by the client and leaves no orphan VM or volume."""

from __future__ import annotations

import os
import time

import pytest
import requests

from tests.pvesim_tests.conftest import Client, upload


def test_http_error_then_retry_succeeds(pve: Client) -> None:
    rule = pve.sim.faults.http_error("POST", r"^/nodes/[^/]+/qemu$", status=503, message="service unavailable", count=1)
    resp = pve.post("/nodes/pve/qemu", vmid=100)
    assert (resp.status_code, resp.reason) == (503, "service unavailable")
    assert pve.sim.vm_ids() == []  # nothing happened
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100))
    assert rule.hits == 1 and pve.sim.vm_ids() == [100]
    statuses = [r.status for r in pve.sim.requests_matching("POST", r"^/nodes/pve/qemu$")]
    assert statuses == [503, 200]


def test_dropped_upload_leaves_nothing(pve: Client) -> None:
    rule = pve.sim.faults.drop_upload(after_bytes=256 * 1024)
    with pytest.raises(requests.exceptions.ConnectionError):
        upload(pve, "seed.iso", os.urandom(4 << 20))
    assert rule.hits == 1
    # the client sees the dropped connection before the simulator's handler has removed its temp file
    deadline = time.monotonic() + 10
    while list(pve.sim.tmp_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert pve.sim.volume_ids() == [] and list(pve.sim.tmp_dir.iterdir()) == []
    logged = pve.sim.requests_matching("POST", "/upload$")[-1]
    assert logged.status == 0 and "dropped" in logged.extra["aborted"] and logged.upload_bytes == 256 * 1024
    pve.ok(upload(pve, "seed.iso", b"retry").json()["data"])  # the retry works
    assert pve.sim.volume_ids() == ["local:iso/seed.iso"]


def test_task_that_never_finishes_can_be_stopped(pve: Client) -> None:
    pve.sim.faults.hang_task("qmcreate")
    upid = pve.data("post", "/nodes/pve/qemu", vmid=100)
    time.sleep(0.5)
    assert pve.data("get", f"/nodes/pve/tasks/{upid}/status")["status"] == "running"
    assert pve.sim.vm_ids() == [100]  # reserved (lock: create) while the task runs
    assert pve.data("get", "/nodes/pve/qemu/100/config")["lock"] == "create"
    assert pve.post("/nodes/pve/qemu/100/status/start").reason == "VM is locked (create)"
    assert pve.data("delete", f"/nodes/pve/tasks/{upid}") is None
    status, _log = pve.wait(upid)
    assert status == "interrupted by signal"
    assert pve.sim.vm_ids() == []  # the failed create removed its VM


def test_task_that_fails_shows_only_in_status_and_log(pve: Client) -> None:
    pve.sim.faults.fail_task("qmcreate", message="unable to create VM 100 - lvcreate failed",
                             log=["  Volume group \"pve\" has insufficient free space"])
    upid = pve.data("post", "/nodes/pve/qemu", vmid=100, virtio0="local-lvm:4")
    status, log = pve.wait(upid)
    assert status == "unable to create VM 100 - lvcreate failed"
    assert log[0] == '  Volume group "pve" has insufficient free space' and log[-1] == f"TASK ERROR: {status}"
    assert pve.sim.vm_ids() == [] and pve.sim.volume_ids() == []
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100, virtio0="local-lvm:4"))  # fault used up
    pve.sim.faults.fail_task("qmstart", vmid=100, message="start failed: QEMU exited with code 1")
    assert pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/start"))[0] == "start failed: QEMU exited with code 1"
    assert pve.data("get", "/nodes/pve/qemu/100/status/current")["status"] == "stopped"


def test_failed_upload_task_keeps_nothing(pve: Client) -> None:
    pve.sim.faults.fail_task("imgcopy", message="import failed: No space left on device")
    status, _ = pve.wait(upload(pve, "seed.iso", b"x" * 1000).json()["data"])
    assert status == "import failed: No space left on device"
    assert pve.sim.volume_ids() == [] and list(pve.sim.tmp_dir.iterdir()) == []


def test_agent_not_running(pve: Client) -> None:
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100, agent="1", net0="virtio,bridge=vmbr0"))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    rule = pve.sim.faults.agent_not_running(100, count=2)
    for _ in range(2):
        resp = pve.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
        assert (resp.status_code, resp.reason) == (500, "QEMU guest agent is not running")
    assert pve.data("get", "/nodes/pve/qemu/100/agent/network-get-interfaces")["result"]
    assert rule.hits == 2


def test_faults_from_plain_dicts(pve: Client) -> None:
    rule = pve.sim.faults.add({"kind": "fail_task", "task_type": "qmdestroy", "message": "boom", "log": ["a", "b"]})
    assert rule.public()["log"] == ["a", "b"]
    with pytest.raises(ValueError, match="unknown fault kind"):
        pve.sim.faults.add({"kind": "meteor"})
    with pytest.raises(ValueError, match="unknown fault field"):
        pve.sim.faults.add({"kind": "http_error", "colour": "red"})
