"""API tokens, roles and ACLs as pve-access-control evaluates them, per PVE version."""

from __future__ import annotations

import pytest

from tests.pvesim.access import Access, builtin_roles
from tests.pvesim.simulator import PveSimulator
from tests.pvesim_tests.conftest import Client

TOKEN = "imgbuild@pve!build"
SECRET = "8d1f0c2e-limited-token"


def as_token(sim: PveSimulator, full_id: str = TOKEN, secret: str = SECRET) -> Client:
    c = Client(sim)
    c.session.headers["Authorization"] = f"PVEAPIToken={full_id}={secret}"
    return c


def test_builtin_roles_differ_between_versions() -> None:
    valid84, roles84 = builtin_roles("8.4")
    valid91, roles91 = builtin_roles("9.1")
    assert "VM.Monitor" in valid84 and "VM.Monitor" not in valid91
    assert "VM.GuestAgent.Audit" in roles91["PVEAuditor"] and "VM.GuestAgent.Audit" not in valid84
    assert roles84["PVETemplateUser"] == {"VM.Clone", "VM.Audit"}
    assert "Mapping.Modify" not in roles91["PVEAdmin"] and "Permissions.Modify" in roles91["Administrator"]
    with pytest.raises(ValueError, match="invalid privilege 'VM.Monitor'"):
        Access("9.1").add_role("old", ["VM.Monitor"])


def test_propagation_deepest_entry_and_privilege_separation() -> None:
    acc = Access("9.1")
    acc.add_token(TOKEN, SECRET, privsep=True)
    acc.grant("/", "imgbuild@pve", "PVEVMAdmin")
    acc.grant("/vms/100", "imgbuild@pve", "PVEAuditor")
    acc.grant("/vms", TOKEN, "PVEVMAdmin")
    acc.grant("/storage", "imgbuild@pve", "PVEDatastoreUser", propagate=False)
    assert "VM.Allocate" in acc.permissions("imgbuild@pve", "/vms/101")
    assert "VM.Allocate" not in acc.permissions("imgbuild@pve", "/vms/100")  # the deeper entry replaces
    assert "Datastore.AllocateSpace" in acc.permissions("imgbuild@pve", "/storage")
    # not propagated: below /storage the entry of / applies again
    assert "Datastore.AllocateSpace" not in acc.permissions("imgbuild@pve", "/storage/local")
    assert "VM.Allocate" in acc.permissions("imgbuild@pve", "/storage/local")
    # a privilege-separated token: its own ACLs, intersected with its user's
    assert "VM.Allocate" in acc.permissions(TOKEN, "/vms/101")
    assert "VM.Allocate" not in acc.permissions(TOKEN, "/vms/100")
    assert acc.permissions(TOKEN, "/nodes/pve") == {}
    acc.tokens[TOKEN].privsep = False
    assert "VM.Allocate" in acc.permissions(TOKEN, "/nodes/pve")  # now simply its user's


def test_a_limited_token_is_refused_with_pves_message(pve_sim: PveSimulator) -> None:
    pve_sim.add_token(TOKEN, SECRET)
    pve_sim.add_role("Inspect", ["VM.Audit", "Datastore.Audit"])
    pve_sim.grant("/", "imgbuild@pve", "Administrator")
    pve_sim.grant("/", TOKEN, "Inspect")
    client = as_token(pve_sim)
    assert client.data("get", "/version")["release"] == pve_sim.version  # user => 'all'
    with pve_sim.expecting_rejection("permission"):
        resp = client.session.post(pve_sim.api_url + "/nodes/pve/storage/local/upload", data={"content": "iso"},
                                   files={"filename": ("a.iso", b"x")}, timeout=30)
    assert (resp.status_code, resp.reason) == (403, "Permission check failed (/storage/local, Datastore.AllocateTemplate)")
    with pve_sim.expecting_rejection("permission"):
        resp = client.post("/nodes/pve/qemu", vmid=100)
    assert (resp.status_code, resp.reason) == (403, "Permission check failed")
    perms = client.data("get", "/access/permissions")
    assert perms["/"] == {"Datastore.Audit": 1, "VM.Audit": 1}
    one = client.request("GET", "/access/permissions", params={"path": "/vms/123"}).json()["data"]
    assert one == {"/vms/123": {"Datastore.Audit": 1, "VM.Audit": 1}}
    with pve_sim.expecting_rejection("permission"):
        resp = client.get("/access/permissions", userid="root@pam")
    assert resp.reason == "Permission check failed (/access, Sys.Audit)"
    # what it may not audit, it does not see
    assert client.data("get", "/nodes/pve/storage") != [] and "mem" not in client.data("get", "/nodes")[0]


def test_guest_agent_privilege_per_version(pve_sim: PveSimulator) -> None:
    root = Client(pve_sim)
    root.ok(root.data("post", "/nodes/pve/qemu", vmid=100, agent="1", net0="virtio,bridge=vmbr0", start=1))
    pve_sim.add_token(TOKEN, SECRET, privsep=False)
    pve_sim.add_role("Watcher", ["VM.Audit"])
    pve_sim.grant("/vms", "imgbuild@pve", "Watcher")
    client = as_token(pve_sim)
    with pve_sim.expecting_rejection("permission"):
        resp = client.get("/nodes/pve/qemu/100/agent/network-get-interfaces")
    expected = {"8.4": "(/vms/100, VM.Monitor)", "9.1": "(/vms/100, VM.GuestAgent.Audit|VM.GuestAgent.Unrestricted)"}
    assert resp.reason == "Permission check failed " + expected[pve_sim.version]
    pve_sim.add_role("Watcher", ["VM.Audit", "VM.Monitor" if pve_sim.version == "8.4" else "VM.GuestAgent.Audit"])
    assert client.data("get", "/nodes/pve/qemu/100/agent/network-get-interfaces")["result"]


def test_bridges_and_tasks_of_others_need_privileges(pve_sim: PveSimulator) -> None:
    root = Client(pve_sim)
    upid = root.data("post", "/nodes/pve/qemu", vmid=100, net0="virtio,bridge=vmbr0")
    root.ok(upid)
    pve_sim.add_token(TOKEN, SECRET, privsep=False)
    pve_sim.grant("/vms", "imgbuild@pve", "PVEVMAdmin")
    pve_sim.grant("/storage", "imgbuild@pve", "PVEDatastoreUser")
    client = as_token(pve_sim)
    with pve_sim.expecting_rejection("permission"):
        resp = client.post("/nodes/pve/qemu", vmid=101, net0="virtio,bridge=vmbr0", virtio0="local-lvm:1")
    assert resp.reason == "Permission check failed (/sdn/zones/localnetwork/vmbr0, SDN.Use)"
    assert client.data("get", "/nodes/pve/network", type="any_bridge") == []  # it may not see the bridge
    with pve_sim.expecting_rejection("permission"):
        resp = client.get(f"/nodes/pve/tasks/{upid}/status")  # root's task
    assert resp.reason == "Permission check failed (/nodes/pve, Sys.Audit)"
    pve_sim.grant("/sdn/zones/localnetwork", "imgbuild@pve", "PVESDNUser")
    mine = client.data("post", "/nodes/pve/qemu", vmid=101, net0="virtio,bridge=vmbr0", virtio0="local-lvm:1")
    assert client.data("get", f"/nodes/pve/tasks/{mine}/status")["user"] == "imgbuild@pve"  # its own: allowed
    assert [b["iface"] for b in client.data("get", "/nodes/pve/network", type="any_bridge")] == ["vmbr0"]
