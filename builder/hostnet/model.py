"""The typed host description: a Proxmox VE node's NICs, bonds, VLAN interfaces and bridges.

Built only from a description that passed validation (rules.py), so every address here is valid.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Shape = Literal["bridged", "nat", "routed", "vlan-aware", "isolated"]


@dataclass(frozen=True, kw_only=True)
class Iface:
    """Anything that can carry the node's own address."""

    name: str
    address: ipaddress.IPv4Interface | None = None
    gateway: ipaddress.IPv4Address | None = None
    comment: str = ""


@dataclass(frozen=True, kw_only=True)
class Nic(Iface):
    pass


@dataclass(frozen=True, kw_only=True)
class Bond(Iface):
    slaves: tuple[str, ...]
    mode: str
    miimon: int = 100
    xmit_hash_policy: str | None = None
    primary: str | None = None


@dataclass(frozen=True, kw_only=True)
class Vlan(Iface):
    raw: str
    id: int


@dataclass(frozen=True)
class Nat:
    out: str
    firewall: bool = False


@dataclass(frozen=True)
class Routed:
    uplink: str


@dataclass(frozen=True)
class DhcpRange:
    start: ipaddress.IPv4Address
    end: ipaddress.IPv4Address


@dataclass(frozen=True, kw_only=True)
class Bridge(Iface):
    ports: tuple[str, ...] = ()
    vlan_aware: bool = False
    vids: str | None = None
    nat: Nat | None = None
    routed: Routed | None = None
    dhcp: DhcpRange | None = None

    @property
    def shape(self) -> Shape:
        if self.nat is not None:
            return "nat"
        if self.routed is not None:
            return "routed"
        if self.vlan_aware:
            return "vlan-aware"
        return "bridged" if self.ports else "isolated"


@dataclass(frozen=True)
class LabClient:
    """A namespace at the far end of one of the node's NICs (only for `imgbuild lab`)."""

    nic: str
    name: str
    address: ipaddress.IPv4Interface
    gateway: ipaddress.IPv4Address | None = None


@dataclass(frozen=True)
class HostNet:
    name: str  # the description's file name without .yaml
    source: Path
    hostname: str
    description: str
    nics: tuple[Nic, ...]
    bonds: tuple[Bond, ...]
    vlans: tuple[Vlan, ...]
    bridges: tuple[Bridge, ...]
    lab_clients: tuple[LabClient, ...]

    def interfaces(self) -> Iterator[Iface]:
        yield from self.nics
        yield from self.bonds
        yield from self.vlans
        yield from self.bridges

    def interface(self, name: str) -> Iface:
        for iface in self.interfaces():
            if iface.name == name:
                return iface
        raise KeyError(name)

    def bridge(self, name: str) -> Bridge | None:
        return next((b for b in self.bridges if b.name == name), None)

    def bridge_of_port(self, port: str) -> Bridge | None:
        return next((b for b in self.bridges if port in b.ports), None)


def _addr(value: str | None) -> ipaddress.IPv4Interface | None:
    return ipaddress.IPv4Interface(value) if value else None


def _ip(value: str | None) -> ipaddress.IPv4Address | None:
    return ipaddress.IPv4Address(value) if value else None


def _common(name: str, data: dict[str, Any]) -> dict[str, Any]:
    return {"name": name, "address": _addr(data.get("address")), "gateway": _ip(data.get("gateway")),
            "comment": data.get("comment", "")}


def build_host(data: dict[str, Any], source: Path) -> HostNet:
    """The typed description from *data* (validated, defaults filled)."""
    nics = tuple(Nic(**_common(name, d)) for name, d in data["nics"].items())
    bonds = tuple(
        Bond(**_common(name, d), slaves=tuple(d["slaves"]), mode=d["mode"], miimon=d["miimon"],
             xmit_hash_policy=d.get("xmit_hash_policy") or default_hash_policy(d["mode"]), primary=d.get("primary"))
        for name, d in data["bonds"].items()
    )
    vlans = tuple(Vlan(**_common(f"{d['raw']}.{d['id']}", d), raw=d["raw"], id=d["id"]) for d in data["vlans"])
    bridges = []
    for name, d in data["bridges"].items():
        nat = Nat(d["nat"]["out"], d["nat"]["firewall"]) if d.get("nat") else None
        routed = Routed(d["routed"]["uplink"]) if d.get("routed") else None
        dhcp = DhcpRange(ipaddress.IPv4Address(d["dhcp"]["start"]), ipaddress.IPv4Address(d["dhcp"]["end"])) \
            if d.get("dhcp") else None
        bridges.append(Bridge(**_common(name, d), ports=tuple(d["ports"]), vlan_aware=d["vlan_aware"],
                              vids=d.get("vids"), nat=nat, routed=routed, dhcp=dhcp))
    host = HostNet(
        name=source.stem, source=source, hostname=data.get("hostname") or source.stem,
        description=data["description"], nics=nics, bonds=bonds, vlans=vlans, bridges=tuple(bridges),
        lab_clients=(),
    )
    return _with_lab_clients(host, data["lab"]["clients"])


def default_hash_policy(mode: str) -> str | None:
    """PVE's GUI default for the modes that hash: layer2+3 (the chapter's 802.3ad example)."""
    return "layer2+3" if mode in HASHING_MODES else None


HASHING_MODES = ("802.3ad", "balance-xor", "balance-tlb")


def _with_lab_clients(host: HostNet, given: dict[str, Any]) -> HostNet:
    clients = []
    for nic in host.nics:
        if nic.name in given:
            c = given[nic.name]
            clients.append(LabClient(nic.name, c["name"], ipaddress.IPv4Interface(c["address"]), _ip(c.get("gateway"))))
            continue
        default = default_lab_client(host, nic.name)
        if default is not None:
            clients.append(default)
    return HostNet(**{**host.__dict__, "lab_clients": tuple(clients)})


def segment_of(host: HostNet, nic: str) -> Iface | None:
    """The interface holding the address of the network on *nic*'s cable: the NIC itself or its bridge."""
    iface = host.interface(nic)
    if iface.address is not None:
        return iface
    bridge = host.bridge_of_port(nic)
    return bridge if bridge is not None and bridge.address is not None else None


def default_lab_client(host: HostNet, nic: str) -> LabClient | None:
    """At the gateway's address when the gateway is on that network, else the network's first free address."""
    segment = segment_of(host, nic)
    if segment is None or segment.address is None:
        return None
    net = segment.address.network
    if segment.gateway is not None and segment.gateway in net:
        return LabClient(nic, f"{nic}-peer", ipaddress.IPv4Interface(f"{segment.gateway}/{net.prefixlen}"))
    taken = {segment.address.ip}
    free = next((a for a in net.hosts() if a not in taken), None)
    if free is None:
        return None
    return LabClient(nic, f"{nic}-peer", ipaddress.IPv4Interface(f"{free}/{net.prefixlen}"))
