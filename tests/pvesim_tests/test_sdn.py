"""SDN as pve-network's API shows it: edits are pending until PUT /cluster/sdn applies them."""

from __future__ import annotations

from tests.pvesim_tests.conftest import Client


def test_pending_until_applied_then_a_bridge_on_the_nodes(pve: Client) -> None:
    assert pve.data("post", "/cluster/sdn/zones", zone="labnat", type="simple", ipam="pve", dhcp="dnsmasq") is None
    assert pve.data("post", "/cluster/sdn/vnets", vnet="natlab", zone="labnat") is None
    assert pve.data("post", "/cluster/sdn/vnets/natlab/subnets", subnet="10.10.10.0/24", type="subnet",
                    gateway="10.10.10.1", snat=1, **{"dhcp-range": "start-address=10.10.10.100,end-address=10.10.10.200"}
                    ) is None
    [zone] = pve.data("get", "/cluster/sdn/zones", pending=1)
    assert zone["state"] == "new" and zone["pending"]["dhcp"] == "dnsmasq" and zone["type"] == "simple"
    assert pve.data("get", "/cluster/sdn/vnets", running=1) == []
    # not applied: no such bridge on the node, a VM on it cannot start
    pve.ok(pve.data("post", "/nodes/pve/qemu", vmid=100, net0="virtio,bridge=natlab"))
    status, _ = pve.wait(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    assert status == "bridge 'natlab' does not exist"
    assert "natlab" not in {i["iface"] for i in pve.data("get", "/nodes/pve/network", type="any_bridge")}
    pve.ok(pve.data("put", "/cluster/sdn"))
    [vnet] = pve.data("get", "/cluster/sdn/vnets", pending=1)
    assert "state" not in vnet and vnet["zone"] == "labnat"
    [subnet] = pve.data("get", "/cluster/sdn/vnets/natlab/subnets")
    assert subnet["subnet"] == "labnat-10.10.10.0-24" and subnet["dhcp-range"] == [
        {"start-address": "10.10.10.100", "end-address": "10.10.10.200"}]
    assert {"iface": "natlab", "type": "vnet", "active": 1, "zone": "labnat"} in pve.data(
        "get", "/nodes/pve/network", type="any_bridge")
    pve.ok(pve.data("post", "/nodes/pve/qemu/100/status/start"))
    # a change is pending again until applied
    pve.data("put", "/cluster/sdn/vnets/natlab/subnets/labnat-10.10.10.0-24", gateway="10.10.10.254")
    [subnet] = pve.data("get", "/cluster/sdn/vnets/natlab/subnets", pending=1)
    assert subnet["state"] == "changed" and subnet["pending"] == {"gateway": "10.10.10.254"}


def test_pve_network_refusals(pve: Client) -> None:
    pve.data("post", "/cluster/sdn/zones", zone="labnat", type="simple")
    resp = pve.post("/cluster/sdn/zones", zone="labnat", type="simple")
    assert resp.status_code == 500 and "sdn zone object ID 'labnat' already defined" in resp.reason
    with pve.sim.expecting_rejection("schema"):
        resp = pve.post("/cluster/sdn/zones", zone="toolongzone", type="simple")
    assert "can't be more length than 8 characters" in resp.json()["errors"]["zone"]
    pve.data("post", "/cluster/sdn/vnets", vnet="natlab", zone="labnat")
    with pve.sim.expecting_rejection("param"):
        resp = pve.post("/cluster/sdn/vnets/natlab/subnets", subnet="10.10.10.0/24", type="subnet",
                        gateway="10.20.0.1")
    assert resp.json()["errors"] == {"gateway": "10.20.0.1 is not in subnet 10.10.10.0/24"}
