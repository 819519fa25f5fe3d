"""What a lab is made of, worked out from a host description (pure: description in, plan out).

The node is one network namespace; each of its NICs is a veth whose far end sits in the namespace of the
machine at the other end of that cable (a "client": the LAN client, the provider's router), or, for NICs
nothing is said about (bond members), in a namespace of loose wire ends. ifupdown2 then applies the
node's rendered /etc/network/interfaces inside the node namespace, unchanged.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass

from builder.errors import InvalidInput
from builder.hostnet.model import DhcpRange, HostNet
from builder.hostnet.render import render_interfaces

NETNS_PREFIX = "imgbuild-"
LAB_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
DEFAULT_LAB = "lab"
CLIENT_IFNAME = "eth0"
WIRES_ROLE = "wires"


def check_lab_name(lab: str) -> str:
    if not LAB_NAME.match(lab):
        raise InvalidInput(f"lab name {lab!r}: lower-case letters, digits and hyphens, a letter first, at most 24")
    return lab


def netns_name(lab: str, role: str) -> str:
    """The network namespace of *role* ("node", a client's name, "wires") in lab *lab*. Lab and role names have no
    underscore, so the prefix of one lab never matches another's (lab "a" and lab "a-b")."""
    return f"{lab_prefix(lab)}{role}"


def lab_prefix(lab: str) -> str:
    """Every namespace of lab *lab* starts with this (what `lab down` looks for after a crash)."""
    return f"{NETNS_PREFIX}{lab}_"


@dataclass(frozen=True)
class Client:
    role: str
    netns: str
    nic: str  # the node's NIC at the other end
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None
    onlink: tuple[ipaddress.IPv4Network, ...]  # routed blocks this client believes are on its wire


@dataclass(frozen=True)
class Dhcp:
    """A DHCP server (dnsmasq) for one network: where it runs and what it hands out."""

    bridge: str  # the node's bridge of that network
    netns: str
    interface: str
    range: DhcpRange
    netmask: ipaddress.IPv4Address
    router: ipaddress.IPv4Address | None


@dataclass(frozen=True)
class Wire:
    nic: str
    peer: str  # name of the loose end in the wires namespace


@dataclass(frozen=True)
class LabPlan:
    lab: str
    host: HostNet
    node: str  # the node's namespace
    clients: tuple[Client, ...]
    wires: tuple[Wire, ...]
    dhcp: tuple[Dhcp, ...]
    interfaces: str  # the rendered /etc/network/interfaces, applied as it is

    @property
    def namespaces(self) -> tuple[str, ...]:
        extra = (netns_name(self.lab, WIRES_ROLE),) if self.wires else ()
        return (self.node, *(c.netns for c in self.clients), *extra)

    def client(self, role: str) -> Client:
        for c in self.clients:
            if c.role == role:
                return c
        raise KeyError(role)


def lab_plan(host: HostNet, lab: str) -> LabPlan:
    check_lab_name(lab)
    clients = []
    for c in host.lab_clients:
        onlink = tuple(b.address.network for b in host.bridges
                       if b.routed is not None and b.routed.uplink == c.nic and b.address is not None)
        clients.append(Client(c.name, netns_name(lab, c.name), c.nic, c.address, c.gateway, onlink))
    with_client = {c.nic for c in clients}
    wires = tuple(Wire(n.name, f"w{i}") for i, n in enumerate(host.nics) if n.name not in with_client)
    node = netns_name(lab, "node")
    return LabPlan(lab=lab, host=host, node=node, clients=tuple(clients), wires=wires,
                   dhcp=tuple(_dhcp_servers(host, clients, node)), interfaces=render_interfaces(host))


def _dhcp_servers(host: HostNet, clients: list[Client], node: str) -> list[Dhcp]:
    """A bridged LAN's DHCP comes from the LAN (the client on its port, as a home router would serve it); a
    network behind the node (NAT, routed, no ports) gets it from the node, which is its gateway."""
    servers = []
    for bridge in host.bridges:
        if bridge.dhcp is None or bridge.address is None:
            continue
        netmask = bridge.address.network.netmask
        on_lan = next((c for c in clients if c.nic in bridge.ports), None)
        if on_lan is not None:
            servers.append(Dhcp(bridge.name, on_lan.netns, CLIENT_IFNAME, bridge.dhcp, netmask,
                                bridge.gateway or bridge.address.ip))
        else:
            servers.append(Dhcp(bridge.name, node, bridge.name, bridge.dhcp, netmask, bridge.address.ip))
    return servers
