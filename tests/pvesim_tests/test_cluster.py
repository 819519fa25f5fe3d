"""The simulated three-node cluster: nodes answering on their own addresses, proxying, node-local and
shared storage, VMs living on one node, cloning across nodes (as pve-manager and qemu-server allow)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.pvesim.cluster import three_nodes
from tests.pvesim.simulator import PveSimulator
from tests.pvesim_tests.conftest import Client


@pytest.fixture
def cluster(pve_sim_factory) -> Iterator[PveSimulator]:  # type: ignore[no-untyped-def]
    yield pve_sim_factory(nodes=three_nodes())


class NodeClient(Client):
    def __init__(self, sim: PveSimulator, node: str) -> None:
        super().__init__(sim)
        self.base = sim.node_url(node) + "/api2/json"

    def request(self, method: str, path: str, **kwargs):  # type: ignore[no-untyped-def]
        return self.session.request(method, self.base + path, timeout=30, **kwargs)


def upload(c: NodeClient, node: str, storage: str, name: str, payload: bytes, content: str = "iso") -> requests.Response:
    return c.session.post(f"{c.base}/nodes/{node}/storage/{storage}/upload", data={"content": content},
                          files={"filename": (name, payload, "application/octet-stream")}, timeout=60)


def test_nodes_resources_and_status(cluster: PveSimulator) -> None:
    pve1 = NodeClient(cluster, "pve1")
    nodes = {n["node"]: n for n in pve1.data("get", "/nodes")}
    assert {k: v["status"] for k, v in nodes.items()} == {"pve1": "online", "pve2": "online", "pve3": "offline"}
    assert nodes["pve2"]["maxmem"] - nodes["pve2"]["mem"] > nodes["pve1"]["maxmem"] - nodes["pve1"]["mem"]
    assert "mem" not in nodes["pve3"] and "maxmem" in nodes["pve3"]
    storages = [(r["node"], r["storage"], r["shared"]) for r in pve1.data("get", "/cluster/resources", type="storage")]
    assert ("pve2", "shared", 1) in storages and ("pve3", "local-lvm", 0) in storages
    status = pve1.data("get", "/cluster/status")
    assert status[0]["type"] == "cluster" and status[0]["nodes"] == 3
    me = [n for n in status if n.get("local")]
    assert [n["name"] for n in me] == ["pve1"] and {n["name"]: n["ip"] for n in status[1:]}["pve2"] == "127.0.0.2"
    assert NodeClient(cluster, "pve2").data("get", "/nodes/pve2/version")["release"] == cluster.version


def test_requests_for_other_nodes_are_proxied_but_not_to_an_offline_one(cluster: PveSimulator) -> None:
    pve1 = NodeClient(cluster, "pve1")
    pve1.ok(pve1.data("post", "/nodes/pve2/qemu", vmid=200, name="on-two", virtio0="local-lvm:1"))
    assert [v["node"] for v in cluster.vms()] == ["pve2"]
    assert [v["vmid"] for v in pve1.data("get", "/nodes/pve2/qemu")] == [200]
    assert pve1.data("get", "/nodes/pve1/qemu") == []
    resp = pve1.get("/nodes/pve1/qemu/200/config")
    assert (resp.status_code, resp.reason) == (500, "Configuration file 'nodes/pve1/qemu-server/200.conf' does not exist")
    assert pve1.data("get", "/cluster/nextid") == "100" and pve1.data("get", "/cluster/nextid", vmid=201) == "201"
    assert [r["node"] for r in pve1.data("get", "/cluster/resources", type="vm")] == ["pve2"]
    with cluster.expecting_rejection("route"):
        resp = pve1.get("/nodes/pve3/qemu")
    assert (resp.status_code, resp.reason) == (595, "No route to host")
    resp = pve1.get("/nodes/pve9/qemu")
    assert resp.status_code == 500 and "hostname lookup 'pve9' failed" in resp.reason


def test_uploads_reach_other_nodes_local_storage_is_per_node(cluster: PveSimulator) -> None:
    pve1 = NodeClient(cluster, "pve1")
    log = pve1.ok(upload(pve1, "pve2", "local", "seed.iso", b"x" * 100).json()["data"])
    assert "target node: pve2" in log and any(line.startswith("command: /usr/bin/scp") for line in log)
    assert cluster.volume_nodes("local:iso/seed.iso") == ["pve2"]
    resp = upload(pve1, "pve3", "local", "seed.iso", b"x" * 100)
    assert resp.status_code == 500 and resp.reason.startswith("can't activate storage 'local' on node 'pve3'")
    assert pve1.data("get", "/nodes/pve1/storage/local/content", content="iso") == []
    assert [e["volid"] for e in pve1.data("get", "/nodes/pve2/storage/local/content", content="iso")] == [
        "local:iso/seed.iso"]
    pve1.ok(upload(pve1, "pve1", "shared", "both.iso", b"y" * 100).json()["data"])
    for node in ("pve1", "pve2"):
        listed = pve1.data("get", f"/nodes/{node}/storage/shared/content", content="iso")
        assert [e["volid"] for e in listed] == ["shared:iso/both.iso"]


def test_clone_to_another_node_needs_shared_storage(cluster: PveSimulator, tmp_path: Path) -> None:
    pve1 = NodeClient(cluster, "pve1")
    pve1.ok(pve1.data("post", "/nodes/pve1/qemu", vmid=100, name="local-tpl", virtio0="local-lvm:1"))
    pve1.ok(pve1.data("post", "/nodes/pve1/qemu/100/template"))
    resp = pve1.post("/nodes/pve1/qemu/100/clone", newid=101, target="pve2")
    assert (resp.status_code, resp.reason) == (500, "can't clone VM to node 'pve2' (VM uses local storage)")
    pve1.ok(pve1.data("post", "/nodes/pve1/qemu", vmid=110, name="shared-tpl", virtio0="shared:1"))
    pve1.ok(pve1.data("post", "/nodes/pve1/qemu/110/template"))
    resp = pve1.post("/nodes/pve1/qemu/110/clone", newid=111, target="pve2", full=1, storage="local-lvm")
    assert (resp.status_code, resp.reason) == (500, "can't clone to non-shared storage 'local-lvm'")
    pve1.ok(pve1.data("post", "/nodes/pve1/qemu/110/clone", newid=111, target="pve2", name="linked"))
    vms = {v["vmid"]: v for v in cluster.vms()}
    assert vms[111]["node"] == "pve2" and vms[111]["config"]["virtio0"].startswith("shared:110/base-110-disk-0")
    image = cluster.volume_path(vms[111]["config"]["virtio0"].split(",")[0])
    backing = subprocess.run(["qemu-img", "info", "--output=json", str(image)], capture_output=True, text=True,
                             check=True).stdout
    assert "base-110-disk-0" in backing


def test_node_memory_follows_running_vms(cluster: PveSimulator) -> None:
    pve1 = NodeClient(cluster, "pve1")
    before = {n["node"]: n["mem"] for n in pve1.data("get", "/nodes") if "mem" in n}
    pve1.ok(pve1.data("post", "/nodes/pve2/qemu", vmid=100, memory="4096", start=1))
    after = {n["node"]: n["mem"] for n in pve1.data("get", "/nodes") if "mem" in n}
    assert after["pve2"] - before["pve2"] == 4 << 30 and after["pve1"] == before["pve1"]
    cluster.set_node("pve1", mem=15 << 30)
    assert {n["node"]: n["mem"] for n in pve1.data("get", "/nodes") if "mem" in n}["pve1"] == 15 << 30


def test_network_of_a_node_lists_its_bridges(cluster: PveSimulator) -> None:
    pve1 = NodeClient(cluster, "pve1")
    bridges = pve1.data("get", "/nodes/pve2/network", type="any_bridge")
    assert [(b["iface"], b["type"], b.get("cidr")) for b in bridges] == [("vmbr0", "bridge", "192.168.1.11/24")]
    every = {i["iface"]: i["type"] for i in pve1.data("get", "/nodes/pve2/network")}
    assert every == {"eno1": "eth", "vmbr0": "bridge"}
