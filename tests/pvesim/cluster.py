"""The simulated cluster: its nodes (online or not, their version, memory, CPU load, host network).

A simulator is one node (``pve``, the default) or a cluster such as ``three_nodes()``: pve1 and pve2
online, pve3 offline. Each online node answers the API on its own loopback address (127.0.0.1,
127.0.0.2, ...; the same port), as PVE nodes answer on their own addresses; the cluster state (VMs,
shared storage, SDN, users and ACLs) is one, as pmxcfs makes it.

What a request to one node about another does follows pve-manager's PVE/HTTPServer.pm
(``rest_handler``: methods with ``proxyto => 'node'`` are proxied to that node) and pve-http-server's
PVE/APIServer/AnyEvent.pm (``proxy_request`` through AnyEvent::HTTP): an unknown node fails the host
name lookup, an offline node answers 595 (AnyEvent::HTTP's status for a connection that could not be
made). An upload has no ``proxyto``: the receiving node copies the file to the other node itself
(pve-storage PVE/API2/Storage/Status.pm, scp), which fails when that node is down.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Iface:
    """One stanza of a node's /etc/network/interfaces, as ``GET /nodes/{node}/network`` lists it."""

    iface: str
    type: str  # bridge, eth, bond, vlan ...
    cidr: str | None = None  # address/prefix, or None (method manual)
    gateway: str | None = None
    bridge_ports: str | None = None
    active: bool = True

    def listing(self, priority: int) -> dict[str, Any]:
        # pve-common PVE/INotify.pm read_etc_network_interfaces: one hash per stanza; bridges carry
        # bridge_ports/bridge_stp/bridge_fd, a static address shows as address/netmask and cidr.
        entry: dict[str, Any] = {"iface": self.iface, "type": self.type, "priority": priority,
                                 "families": ["inet"], "method": "static" if self.cidr else "manual",
                                 "method6": "manual", "autostart": 1}
        if self.active:
            entry["active"] = 1
        if self.type == "eth":
            entry["exists"] = 1
        if self.type == "bridge":
            entry.update({"bridge_ports": self.bridge_ports or "none", "bridge_stp": "off", "bridge_fd": "0"})
        if self.cidr:
            net = ipaddress.ip_interface(self.cidr)
            entry.update({"cidr": self.cidr, "address": str(net.ip), "netmask": str(net.network.prefixlen)})
        if self.gateway:
            entry["gateway"] = self.gateway
        return entry


def default_interfaces(index: int, bridges: tuple[str, ...] | dict[str, str | None] = ("vmbr0",)) -> list[Iface]:
    """A node's network: its NIC, vmbr0 on it holding the node's LAN address, other bridges without ports.

    *bridges* names the bridges (the first is the LAN bridge) or maps each to its address."""
    addresses = dict(bridges) if isinstance(bridges, dict) else {name: None for name in bridges}
    out = [Iface("eno1", "eth")]
    for i, (name, cidr) in enumerate(addresses.items()):
        if i == 0:
            out.append(Iface(name, "bridge", cidr or f"192.168.1.{10 + index}/24", gateway="192.168.1.1",
                             bridge_ports="eno1"))
        else:
            out.append(Iface(name, "bridge", cidr))
    return out


@dataclass
class NodeSpec:
    name: str
    online: bool = True
    version: str | None = None  # pve-manager version this node runs; None: the simulator's
    maxmem: int = 32 << 30
    mem: int = 3 << 30  # used by the host itself; running VMs add their configured memory
    maxcpu: int = 8
    cpu: float = 0.03  # load, 0..1
    interfaces: list[Iface] = field(default_factory=list)


def single_node(name: str = "pve", bridges: tuple[str, ...] | dict[str, str | None] = ("vmbr0",)) -> list[NodeSpec]:
    return [NodeSpec(name, interfaces=default_interfaces(0, bridges))]


def three_nodes(bridges: tuple[str, ...] | dict[str, str | None] = ("vmbr0",)) -> list[NodeSpec]:
    """The cluster of the cluster tests: pve1 and pve2 online (pve2 with more memory free), pve3 offline."""
    return [
        NodeSpec("pve1", maxmem=16 << 30, mem=6 << 30, cpu=0.10, interfaces=default_interfaces(0, bridges)),
        NodeSpec("pve2", maxmem=16 << 30, mem=4 << 30, cpu=0.05, interfaces=default_interfaces(1, bridges)),
        NodeSpec("pve3", online=False, maxmem=64 << 30, mem=2 << 30, interfaces=default_interfaces(2, bridges)),
    ]


def loopback_address(index: int) -> str:
    """Where node number *index* listens: 127.0.0.1, 127.0.0.2, ... (all of 127/8 is loopback on Linux)."""
    return f"127.0.0.{index + 1}"
