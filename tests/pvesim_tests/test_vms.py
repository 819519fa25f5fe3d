"""VM semantics: create/import/config, power, template/clone/destroy and their refusals, agent, tasks."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest

from tests.pvesim.backends import FakeBackend
from tests.pvesim_tests.conftest import Client, upload

UPID = re.compile(r"^UPID:pve:[0-9A-F]{8}:[0-9A-F]{8}:[0-9A-F]{8}:(\w+):(\d*):root@pam!imgbuild:$")
WEB = {
    "name": "web-server", "memory": "2048", "cores": "2", "cpu": "kvm64", "ostype": "l26", "vga": "qxl",
    "net0": "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20", "virtio0": "local-lvm:4,cache=none",
    "ide2": "local:iso/seed.iso,media=cdrom", "boot": "order=virtio0;ide2", "agent": "enabled=1",
    "ipconfig0": "ip=192.168.1.250/24,gw=192.168.1.1",
}


def create(pve: Client, vmid: int = 100, **params: Any) -> list[str]:
    upid = pve.data("post", "/nodes/pve/qemu", vmid=vmid, **params)
    m = UPID.match(upid)
    assert m and m.groups() == ("qmcreate", str(vmid)), upid
    return pve.ok(upid)


def web(pve: Client, vmid: int = 100, **extra: Any) -> None:
    pve.ok(upload(pve, "seed.iso", b"seed").json()["data"])
    create(pve, vmid, **{**WEB, **extra})


def test_create_normalizes_and_types_the_config(pve: Client) -> None:
    web(pve)
    config = pve.data("get", "/nodes/pve/qemu/100/config")
    assert config["cores"] == 2 and config["memory"] == "2048" and config["agent"] == "enabled=1"
    assert config["virtio0"] == "local-lvm:vm-100-disk-0,cache=none,size=4G"
    assert config["ide2"] == "local:iso/seed.iso,media=cdrom,size=4"
    assert config["net0"] == "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20"
    assert re.fullmatch(r"[0-9a-f]{40}", config["digest"]) and config["smbios1"].startswith("uuid=")
    assert pve.sim.volume_ids("images") == ["local-lvm:vm-100-disk-0"]
    # a NIC without MAC gets one in PVE's prefix
    create(pve, 101, net0="virtio,bridge=vmbr0")
    assert re.fullmatch(r"virtio=BC:24:11:[0-9A-F:]{8},bridge=vmbr0", pve.data("get", "/nodes/pve/qemu/101/config")["net0"])


def test_create_refusals(pve: Client) -> None:
    create(pve)
    resp = pve.post("/nodes/pve/qemu", vmid=100)
    assert (resp.status_code, resp.reason) == (500, "unable to create VM 100: config file already exists")
    resp = pve.post("/nodes/pve/qemu", vmid=102, virtio0="nosuch:4")
    assert (resp.status_code, resp.reason) == (500, "storage 'nosuch' does not exist")
    resp = pve.post("/nodes/pve/qemu", vmid=102, virtio0="local:4")
    assert (resp.status_code, resp.reason) == (500, "storage 'local' does not support vm images")
    resp = pve.post("/nodes/other/qemu", vmid=102)
    assert resp.status_code == 500 and "hostname lookup 'other' failed" in resp.reason
    # a missing ISO makes the create task fail, and no VM is left behind
    status, log = pve.wait(pve.data("post", "/nodes/pve/qemu", vmid=103, ide2="local:iso/nope.iso,media=cdrom"))
    assert status == "volume 'local:iso/nope.iso' does not exist" and log[-1] == f"TASK ERROR: {status}"
    assert pve.sim.vm_ids() == [100]


def test_nextid(pve: Client) -> None:
    assert pve.data("get", "/cluster/nextid") == "100"
    create(pve)
    assert pve.data("get", "/cluster/nextid") == "101"
    assert pve.data("get", "/cluster/nextid", vmid=150) == "150"
    resp = pve.get("/cluster/nextid", vmid=100)
    assert resp.status_code == 400 and resp.json()["errors"] == {"vmid": "VM 100 already exists"}
    assert [r.kind for r in pve.sim.rejections] == ["probe"]  # a probe, not a mistake: the fixture allows it


def test_import_from_uploaded_qcow2(pve: Client, tmp_path: Path) -> None:
    image = tmp_path / "web.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "2G"], check=True)
    pve.ok(upload(pve, "web.qcow2", image.read_bytes(), content="import").json()["data"])
    log = create(pve, virtio0="local-lvm:0,import-from=local:import/web.qcow2,cache=none")
    assert any("importing disk 'local:import/web.qcow2'" in line for line in log)
    config = pve.data("get", "/nodes/pve/qemu/100/config")
    assert config["virtio0"] == "local-lvm:vm-100-disk-0,cache=none,size=2G"
    with pve.sim.expecting_rejection("param"):
        resp = pve.post("/nodes/pve/qemu", vmid=101, virtio0="local-lvm:vm-100-disk-0,import-from=local:import/web.qcow2")
    assert resp.json()["errors"] == {"virtio0": "import-from requires special syntax - use <storage ID>:0,import-from=<source>"}
    resp = pve.post("/nodes/pve/qemu", vmid=101, virtio0="local-lvm:0,import-from=local:import/none.qcow2")
    assert resp.reason == "volume 'local:import/none.qcow2' does not exist"
    # grow the imported disk
    pve.ok(pve.data("put", "/nodes/pve/qemu/100/resize", disk="virtio0", size="+1G"))
    assert pve.data("get", "/nodes/pve/qemu/100/config")["virtio0"].endswith("size=3G")


def test_config_post_is_a_task_put_is_synchronous(pve: Client) -> None:
    web(pve)
    upid = pve.data("post", "/nodes/pve/qemu/100/config", ide2="none,media=cdrom", boot="order=virtio0")
    assert UPID.match(upid).group(1) == "qmconfig"  # type: ignore[union-attr]
    pve.ok(upid)
    assert pve.data("put", "/nodes/pve/qemu/100/config", delete="ipconfig0", description="x") is None
    config = pve.data("get", "/nodes/pve/qemu/100/config")
    assert config["ide2"] == "none,media=cdrom" and "ipconfig0" not in config and config["description"] == "x"
    resp = pve.put("/nodes/pve/qemu/100/config", digest="0" * 40, name="x")
    assert resp.reason == "detected modified configuration - file changed by other user? Try again."
    # deleting a disk keeps its volume as unused0; deleting unused0 frees it
    pve.put("/nodes/pve/qemu/100/config", delete="virtio0")
    assert pve.data("get", "/nodes/pve/qemu/100/config")["unused0"] == "local-lvm:vm-100-disk-0"
    pve.put("/nodes/pve/qemu/100/config", delete="unused0")
    assert pve.sim.volume_ids("images") == []


def test_power_and_status(pve: Client) -> None:
    web(pve)
    assert pve.data("get", "/nodes/pve/qemu/100/status/current")["status"] == "stopped"
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    status = pve.data("get", "/nodes/pve/qemu/100/status/current")
    assert status["status"] == "running" and status["agent"] == 1
    assert pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/start"))[0] == "VM 100 already running"
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/shutdown", timeout=10))
    assert pve.data("get", "/nodes/pve/qemu/100/status/current")["status"] == "stopped"
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/stop"))
    assert pve.data("get", "/nodes/pve/qemu")[0]["status"] == "stopped"
    # the guest powers itself off (an installer's end)
    backend = pve.sim.backend
    assert isinstance(backend, FakeBackend)
    backend.power_off_after(100, 0.2)
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    import time

    deadline = time.monotonic() + 10
    while pve.data("get", "/nodes/pve/qemu/100/status/current")["status"] != "stopped":
        assert time.monotonic() < deadline, "the guest did not power itself off"
        time.sleep(0.05)


def test_shutdown_timeout_without_force_fails(pve: Client) -> None:
    web(pve)
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    pve.sim.backend.ignore_acpi.add(100)  # type: ignore[attr-defined]
    status, _ = pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/shutdown", timeout=1))
    assert status == "VM quit/powerdown failed - got timeout"
    log = pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/shutdown", timeout=1, forceStop=1))
    assert "VM still running - terminating now with SIGTERM" in log


def test_bridge_must_exist_at_start(pve: Client) -> None:
    create(pve, net0="virtio,bridge=vmbr7")
    assert pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/start"))[0] == "bridge 'vmbr7' does not exist"


def test_template_clone_destroy(pve: Client) -> None:
    web(pve)
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    resp = pve.post("/nodes/pve/qemu/100/template")
    assert (resp.status_code, resp.reason) == (500, "you can't convert a VM to template if VM is running")
    resp = pve.delete("/nodes/pve/qemu/100")
    assert (resp.status_code, resp.reason) == (500, "VM 100 is running - destroy failed")
    # linked clones only from templates
    resp = pve.post("/nodes/pve/qemu/100/clone", newid=200, full=0)
    assert (resp.status_code, resp.reason) == (500, "linked clone feature is not supported for drive 'virtio0'")
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/stop"))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/clone", newid=101, name="web-full", full=1))
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/template"))
    config = pve.data("get", "/nodes/pve/qemu/100/config")
    assert config["template"] == 1 and config["virtio0"].startswith("local-lvm:base-100-disk-0,")
    assert pve.post("/nodes/pve/qemu/100/template").reason == "you can't convert a template to a template"
    assert pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/start"))[0] == "you can't start a vm if it's a template"
    log = pve.ok(pve.data("post", "/nodes/pve/qemu/100/clone", newid=102, name="web-linked"))  # full defaults to 0
    assert any("linked clone" in line for line in log)
    clone = pve.data("get", "/nodes/pve/qemu/102/config")
    assert clone["virtio0"].startswith("local-lvm:base-100-disk-0/vm-102-disk-0,") and clone["name"] == "web-linked"
    assert clone["net0"] != config["net0"] and "template" not in clone
    assert pve.post("/nodes/pve/qemu/100/clone", newid=102).reason == "unable to create VM 102: config file already exists"
    assert pve.post("/nodes/pve/qemu/100/clone", newid=103, full=0, storage="local-lvm").reason == (
        "parameter 'storage' not allowed for linked clones")
    # the template's base disk is in use by the linked clone
    status, _ = pve.wait(pve.data("delete", "/nodes/pve/qemu/100"))
    assert status == "base volume 'base-100-disk-0' is still in use by linked cloned"
    for vmid in (102, 101, 100):
        pve.ok(pve.data("delete", "/nodes/pve/qemu/" + str(vmid)))
    assert pve.sim.vm_ids() == [] and pve.sim.volume_ids("images") == []
    assert pve.sim.volume_ids() == ["local:iso/seed.iso"]


def test_missing_vm(pve: Client) -> None:
    for method, path in (("get", "/config"), ("get", "/status/current"), ("post", "/status/start"), ("delete", "")):
        resp = getattr(pve, method)(f"/nodes/pve/qemu/999{path}")
        assert (resp.status_code, resp.reason) == (500, "Configuration file 'nodes/pve/qemu-server/999.conf' does not exist")


def test_agent_answers_only_when_configured_and_running(pve: Client) -> None:
    create(pve, 100, net0="virtio=BC:24:11:00:00:01,bridge=vmbr0")
    web_agent = pve.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
    assert (web_agent.status_code, web_agent.reason) == (500, "No QEMU guest agent configured")
    pve.put("/nodes/pve/qemu/100/config", agent="enabled=1", ipconfig0="ip=192.168.1.250/24,gw=192.168.1.1")
    resp = pve.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
    assert (resp.status_code, resp.reason) == (500, "VM 100 is not running")
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    result = pve.data("get", "/nodes/pve/qemu/100/agent/network-get-interfaces")["result"]
    eth0 = next(i for i in result if i["name"] == "eth0")
    assert eth0["hardware-address"] == "bc:24:11:00:00:01"
    assert {"ip-address": "192.168.1.250", "ip-address-type": "ipv4", "prefix": 24} in eth0["ip-addresses"]
    assert any(a["ip-address"].startswith("fe80::") for a in eth0["ip-addresses"])
    assert pve.data("post", "/nodes/pve/qemu/100/agent/ping") == {"result": {}}
    assert pve.data("get", "/nodes/pve/qemu/100/agent/get-host-name") == {"result": {"host-name": "vm100"}}
    # an agent that needs time to come up, then a test-chosen address
    backend = pve.sim.backend
    assert isinstance(backend, FakeBackend)
    backend.set_agent(100, installed=False)
    assert pve.post("/nodes/pve/qemu/100/agent/ping").reason == "QEMU guest agent is not running"
    backend.set_agent(100, interfaces=[{"name": "ens18", "hardware-address": "bc:24:11:00:00:01",
                                        "ip-addresses": [{"ip-address": "10.9.8.7", "ip-address-type": "ipv4", "prefix": 24}]}])
    result = pve.data("get", "/nodes/pve/qemu/100/agent/network-get-interfaces")["result"]
    assert result[0]["ip-addresses"][0]["ip-address"] == "10.9.8.7"


def test_task_listing_and_log_paging(pve: Client) -> None:
    web(pve)
    tasks = pve.data("get", "/nodes/pve/tasks", vmid=100)
    assert [t["type"] for t in tasks] == ["qmcreate"] and tasks[0]["status"] == "OK"
    upid = tasks[0]["upid"]
    resp = pve.get(f"/nodes/pve/tasks/{upid}/log", start=1, limit=1)
    assert resp.json()["total"] == 2 and resp.json()["data"] == [{"n": 2, "t": "TASK OK"}]
    # pve-manager PVE/API2/Tasks.pm: raise_param_exc({ upid => "unable to parse worker upid" })
    with pve.sim.expecting_rejection("param"):
        resp = pve.get("/nodes/pve/tasks/UPID:pve:bogus/status")
    assert resp.status_code == 400 and resp.json()["errors"] == {"upid": "unable to parse worker upid"}


@pytest.mark.parametrize("vmid", [100])
def test_cluster_resources_and_storage_status(pve: Client, vmid: int) -> None:
    create(pve, vmid, name="web", virtio0="local-lvm:1")
    res = pve.data("get", "/cluster/resources", type="vm")
    assert [(r["id"], r["name"], r["status"], r["template"]) for r in res] == [("qemu/100", "web", "stopped", 0)]
    status = pve.data("get", "/nodes/pve/storage/local-lvm/status")
    assert status["used"] == 1 << 30 and "images" in status["content"]
    resp = pve.get("/nodes/pve/storage/nosuch/status")
    assert resp.status_code == 400 and resp.json()["errors"] == {"storage": "No such storage."}
    pve.sim.take_rejections()
    assert {s["storage"] for s in pve.data("get", "/nodes/pve/storage", content="iso")} == {"local"}
