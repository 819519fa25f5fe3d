"""User-mode (slirp) networking that matches the recipe's network, and loopback port forwards.

A static recipe (192.168.1.250/24 via 192.168.1.1) gets a slirp subnet 192.168.1.0/24 whose router
is the recipe's gateway, so the guest's own configuration works unchanged; DHCP/NAT recipes get
QEMU's default 10.0.2.0/24, where slirp's DHCP hands out 10.0.2.15. Guest ports are forwarded from
free ports on 127.0.0.1 only.
"""

from __future__ import annotations

import ipaddress
import socket
from dataclasses import dataclass

from builder.errors import InvalidInput
from builder.targets.base import GuestNetwork

DEFAULT_NET = ipaddress.ip_network("10.0.2.0/24")


@dataclass(frozen=True)
class SlirpNet:
    net: str  # "192.168.1.0/24"
    host: str  # slirp's router (and the host's loopback as seen from the guest)
    dns: str  # slirp's DNS forwarder
    guest: str  # where forwards point: the static address, or the first DHCP lease

    def netdev_options(self, forwards: dict[int, int]) -> str:
        """``-netdev user,…`` options (without id) for *forwards* {guest_port: host_port}."""
        opts = [f"net={self.net}", f"host={self.host}", f"dns={self.dns}", f"dhcpstart={self.dhcp_start}"]
        opts += [f"hostfwd=tcp:127.0.0.1:{hp}-{self.guest}:{gp}" for gp, hp in sorted(forwards.items())]
        return ",".join(opts)

    @property
    def dhcp_start(self) -> str:
        net = ipaddress.ip_network(self.net)
        return str(net.network_address + 15)


def slirp_for(network: GuestNetwork) -> SlirpNet:
    """The slirp network for a guest network (pure)."""
    if network.mode != "static":
        n = DEFAULT_NET
        return SlirpNet(str(n), str(n.network_address + 2), str(n.network_address + 3), str(n.network_address + 15))
    if not network.address:
        raise InvalidInput("a static guest network needs an address (e.g. 192.168.1.250/24)")
    try:
        iface = ipaddress.ip_interface(network.address)
    except ValueError as exc:
        raise InvalidInput(f"static address {network.address!r} is not an address/prefix: {exc}") from exc
    if iface.version != 4:
        raise InvalidInput(f"the local target's user-mode network is IPv4 only; got {network.address}")
    net = iface.network
    if net.num_addresses < 8:
        raise InvalidInput(f"network {net} is too small for a user-mode network (need room for router, DNS and guest)")
    guest = iface.ip
    gateway = None
    if network.gateway:
        gateway = ipaddress.ip_address(network.gateway)
        if gateway not in net:
            raise InvalidInput(f"gateway {network.gateway} is outside {net}")
        if gateway == guest:
            raise InvalidInput(f"gateway {network.gateway} is the guest's own address")
    dns = None
    for ns in network.nameservers:
        try:
            addr = ipaddress.ip_address(ns)
        except ValueError:
            continue
        if addr in net and addr != guest:
            dns = addr
            break
    taken = {guest} | ({dns} if dns else set())
    if gateway is not None and gateway != dns:
        host = gateway
    else:
        # No gateway, or the recipe's DNS server is its gateway (a home router): slirp cannot answer DNS on
        # its own host address ("DNS must be different from host"), so DNS takes the gateway's address and
        # the host side another one. The guest still routes through the gateway: slirp answers for both.
        host = _free_in(net, taken, prefer=2)
    taken.add(host)
    if dns is None:
        dns = _free_in(net, taken, prefer=3)
    return SlirpNet(str(net), str(host), str(dns), str(guest))


def _free_in(net: ipaddress.IPv4Network, taken: set, prefer: int) -> ipaddress.IPv4Address:
    hosts = list(net.hosts())
    order = [net.network_address + prefer, *hosts]
    for addr in order:
        if addr in net and addr != net.network_address and addr != net.broadcast_address and addr not in taken:
            return addr
    raise InvalidInput(f"no free address in {net} for slirp's router/DNS")


def free_loopback_ports(count: int) -> list[int]:
    """*count* distinct TCP ports free on 127.0.0.1 right now (held open together so they differ)."""
    socks = []
    try:
        for _ in range(count):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.bind(("127.0.0.1", 0))
            socks.append(s)
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()
