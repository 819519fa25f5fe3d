"""The rendered bridged, routed and NAT configs brought up by ifupdown2 inside fresh network namespaces
(veth pairs as NICs, `imgbuild lab`'s machinery), and the kernel state checked: bridges and ports, addresses,
routes, forwarding, proxy ARP answering for the routed block, the NAT rules in nftables and a masqueraded
connection. Bonds and VLANs: this kernel refuses them, so ifupdown2's parsed view is asserted and the output
says that the kernel check was not possible (a warning in the summary, not a skip)."""

from __future__ import annotations

import re
import warnings
from collections.abc import Iterator

import pytest

from builder.hostnet import load_host
from builder.hostnet.ifupdown import parsed_view
from builder.hostnet.render import render_interfaces
from builder.lab import netns as ns
from builder.lab.kernel import refusals
from builder.lab.plan import LabPlan, lab_plan
from builder.proc import run
from tests.net.conftest import HOSTS, lab_from, lab_name
from tests.net.netcheck import (
    addresses,
    bridge_ports,
    connect,
    default_route,
    links,
    listen,
    mac_of,
    neighbour_mac,
    nft_ruleset,
    plug_probe,
)


@pytest.fixture(scope="module")
def bridged(lab_dir) -> Iterator[LabPlan]:
    with lab_from(HOSTS / "bridged.yaml", lab_name("apply-bridged")) as plan:
        yield plan


@pytest.fixture(scope="module")
def routed(lab_dir) -> Iterator[LabPlan]:
    with lab_from(HOSTS / "routed.yaml", lab_name("apply-routed")) as plan:
        yield plan


@pytest.fixture(scope="module")
def nat(lab_dir) -> Iterator[LabPlan]:
    with lab_from(HOSTS / "nat.yaml", lab_name("apply-nat")) as plan:
        yield plan


def test_bridged_vmbr0_enslaves_eno1_and_carries_the_address(bridged: LabPlan) -> None:
    node = links(bridged.node)
    assert node["vmbr0"]["linkinfo"]["info_kind"] == "bridge"
    info = node["vmbr0"]["linkinfo"]["info_data"]
    assert info["stp_state"] == 0 and info["forward_delay"] == 0  # bridge-stp off, bridge-fd 0
    assert node["eno1"]["linkinfo"]["info_kind"] == "veth" and bridge_ports(bridged.node, "vmbr0") == ["eno1"]
    assert addresses(bridged.node, "vmbr0") == ["192.168.10.2/24"] and addresses(bridged.node, "eno1") == []
    assert default_route(bridged.node) == "192.168.10.1"
    assert "UP" in node["vmbr0"]["flags"] and "UP" in node["eno1"]["flags"]


def test_bridged_lan_reaches_the_node_through_the_bridge(bridged: LabPlan) -> None:
    (client,) = bridged.clients
    assert str(client.address) == "192.168.10.1/24"  # by default the client plays the gateway
    assert connect(client.netns, "192.168.10.2", 22) == "refused"  # the node answered (no SSH server there)
    assert neighbour_mac(client.netns, "192.168.10.2") == mac_of(bridged.node, "vmbr0")


def test_routed_uplink_has_forwarding_and_proxy_arp(routed: LabPlan) -> None:
    assert addresses(routed.node, "eno0") == ["198.51.100.5/29"] and default_route(routed.node) == "198.51.100.1"
    assert ns.sysctl(routed.node, "net/ipv4/ip_forward") == "1"
    assert ns.sysctl(routed.node, "net/ipv4/conf/eno0/proxy_arp") == "1"
    assert links(routed.node)["vmbr0"]["linkinfo"]["info_kind"] == "bridge"
    assert bridge_ports(routed.node, "vmbr0") == [] and addresses(routed.node, "vmbr0") == ["203.0.113.17/28"]


def test_routed_block_answered_by_proxy_arp_on_the_uplink(routed: LabPlan) -> None:
    """The provider's router believes 203.0.113.16/28 is on its wire and asks by ARP for a guest address: the
    node answers with its uplink's MAC. With proxy ARP off the same question goes unanswered."""
    (provider,) = routed.clients
    assert [str(n) for n in provider.onlink] == ["203.0.113.16/28"]
    connect(provider.netns, "203.0.113.20", 80, timeout=2)  # no guest there yet: only the ARP answer matters
    assert neighbour_mac(provider.netns, "203.0.113.20") == mac_of(routed.node, "eno0")
    ns.ip("neigh", "flush", "all", netns=provider.netns)
    try:
        with open_proc_sys(routed.node, "net/ipv4/conf/eno0/proxy_arp", "0"):
            connect(provider.netns, "203.0.113.21", 80, timeout=2)
            assert neighbour_mac(provider.netns, "203.0.113.21") is None
    finally:
        assert ns.sysctl(routed.node, "net/ipv4/conf/eno0/proxy_arp") == "1"


class open_proc_sys:
    """Set a /proc/sys value inside a namespace for a while, then put the old one back."""

    def __init__(self, netns: str, key: str, value: str) -> None:
        self.netns, self.key, self.value = netns, key, value

    def _write(self, value: str) -> None:
        run(ns.in_netns(self.netns, ["sh", "-c", f"echo {value} > /proc/sys/{self.key}"]))

    def __enter__(self) -> None:
        self.old = ns.sysctl(self.netns, self.key)
        self._write(self.value)

    def __exit__(self, *exc: object) -> None:
        self._write(self.old)


def test_nat_forwarding_and_rules_in_nftables(nat: LabPlan) -> None:
    assert ns.sysctl(nat.node, "net/ipv4/ip_forward") == "1"
    assert bridge_ports(nat.node, "vmbr0") == [] and addresses(nat.node, "vmbr0") == ["10.10.10.1/24"]
    rules = nft_ruleset(nat.node)
    assert re.search(r'chain POSTROUTING \{[^}]*oifname "eno1" ip saddr 10\.10\.10\.0/24 .*masquerade', rules, re.S), rules
    assert re.search(r'table ip raw \{[^}]*chain PREROUTING \{[^}]*iifname "fwbr\*" .*CT', rules, re.S), rules


def test_nat_masquerades_a_guest_behind_the_node(nat: LabPlan) -> None:
    """A stand-in guest on vmbr0 (10.10.10.20) connects out: the far side sees the node's address."""
    (outside,) = nat.clients
    guest = plug_probe(nat.lab, nat.node, "vmbr0", "10.10.10.20/24", "10.10.10.1")
    listener = listen(outside.netns, 8080)
    assert connect(guest, str(outside.address.ip), 8080) == "connected"
    assert listener.peer() == "198.51.100.5"
    assert connect(outside.netns, "10.10.10.20", 8080, timeout=3).startswith("failed")  # nothing routes inward


@pytest.mark.parametrize("host", ["bond", "vlan"])
def test_bonds_and_vlans_parsed_view_and_kernel(host: str, lab_dir) -> None:
    description = load_host(HOSTS / f"{host}.yaml")
    view = {i["name"]: i["config"] for i in parsed_view(render_interfaces(description))}
    if host == "bond":
        assert view["bond0"]["bond-mode"] == "802.3ad" and view["bond0"]["bond-xmit-hash-policy"] == "layer2+3"
        assert view["bond0"]["bond-miimon"] == "100" and view["bond0"]["bond-slaves"] == "eno1 eno2"
        assert view["bond1"]["bond-mode"] == "active-backup" and view["bond1"]["bond-primary"] == "eno3"
        assert view["vmbr0"]["bridge-ports"] == "bond0"
    else:
        assert view["vmbr0"]["bridge-vlan-aware"] == "yes" and view["vmbr0"]["bridge-vids"] == "2-4094"
        assert view["vmbr0.5"]["address"] == "10.10.5.2/24" and view["vmbr1v10"]["bridge-ports"] == "eno2.10"
    lab = lab_name(f"apply-{host}")
    refused = refusals(description, lab)
    if refused:
        message = "; ".join(f"{r.feature} ({r.error})" for r in refused)
        warnings.warn(f"{host}.yaml: kernel check not possible here: this kernel refuses {message}; "
                      "ifupdown2's parsed view was asserted instead", stacklevel=1)
        return
    with lab_from(HOSTS / f"{host}.yaml", lab) as plan:  # a kernel that allows them: check what it built
        node = links(plan.node)
        if host == "bond":
            assert node["bond0"]["linkinfo"]["info_data"]["mode"] == "802.3ad"
            assert node["bond1"]["linkinfo"]["info_data"]["mode"] == "active-backup"
            assert bridge_ports(plan.node, "vmbr0") == ["bond0"]
        else:
            assert node["vmbr0"]["linkinfo"]["info_data"]["vlan_filtering"] == 1
            assert addresses(plan.node, "vmbr0.5") == ["10.10.5.2/24"]
            assert bridge_ports(plan.node, "vmbr1v10") == ["eno2.10"]


def test_lab_plan_uses_the_rendered_file_unchanged() -> None:
    host = load_host(HOSTS / "chapter.yaml")
    assert lab_plan(host, lab_name("x")).interfaces == render_interfaces(host)
