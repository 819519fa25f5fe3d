"""Render a host description as /etc/network/interfaces for a Proxmox VE node (pure: description in, text out).

Stanzas follow the Proxmox VE admin guide's network chapter (pve-docs, pve-network.adoc) in the order and
spelling PVE itself writes (PVE/Network/Interfaces.pm in pve-common): physical NICs `inet manual` without
`auto`, then bonds, VLAN interfaces and bridges, options indented by a tab, `source
/etc/network/interfaces.d/*` last (PVE's SDN writes its networks there).
"""

from __future__ import annotations

from collections.abc import Iterable

from builder.hostnet.model import Bond, Bridge, HostNet, Iface, Nic, Vlan

SDN_SOURCE = "source /etc/network/interfaces.d/*"

# Written once, above the stanzas, when a bridge has no ports: why "iface none" is there.
EMPTY_BRIDGE_NOTE = """\
# Bridges without ports (NAT and routed) say "bridge-ports none": that is how Proxmox VE
# writes them and the only spelling its parser reads as a bridge without ports
# (PVE/Network/Interfaces.pm: a bridge is a stanza with bridge-ports; "none" is skipped).
# ifupdown2 skips a "none" port too, but the syntax check of ifupdown2 3.0 (Debian 12,
# `ifup -a -s`) accepts only names of interfaces declared in this file there
# (CumulusNetworks/ifupdown2#75, fixed in ifupdown2 3.3 and in PVE's build). Declaring
# "none" below satisfies that check and changes nothing: it has no "auto" and no bridge
# depends on it, so ifupdown2 never brings it up.
iface none inet manual"""


def render_interfaces(host: HostNet) -> str:
    """The whole /etc/network/interfaces file for *host*."""
    blocks = [_header(host), "auto lo\niface lo inet loopback"]
    if any(not b.ports for b in host.bridges):
        blocks.append(EMPTY_BRIDGE_NOTE)
    blocks += [_nic(host, nic) for nic in host.nics]
    blocks += [_bond(host, bond) for bond in host.bonds]
    blocks += [_vlan(host, vlan) for vlan in host.vlans if host.bridge(vlan.raw) is None]
    for bridge in host.bridges:
        blocks.append(_bridge(host, bridge))
        blocks += [_vlan(host, vlan) for vlan in host.vlans if vlan.raw == bridge.name]
    blocks.append(SDN_SOURCE)
    return "\n\n".join(blocks) + "\n"


def _header(host: HostNet) -> str:
    lines = [f"# /etc/network/interfaces of Proxmox VE node {host.hostname}",
             f"# rendered by imgbuild from {host.source.name}; apply with: ifreload -a"]
    if host.description:
        lines.append(f"# {host.description}")
    shapes = sorted({b.shape for b in host.bridges} | ({"bond"} if host.bonds else set()))
    if shapes:
        lines.append(f"# shapes: {', '.join(shapes)}")
    return "\n".join(lines)


def _stanza(iface: Iface, options: Iterable[str], *, auto: bool, comments: Iterable[str] = ()) -> str:
    method = "static" if iface.address is not None else "manual"
    lines = [f"# {c}" for c in ([iface.comment] if iface.comment else [])]
    lines += [f"# {c}" for c in comments]
    if auto:
        lines.append(f"auto {iface.name}")
    lines.append(f"iface {iface.name} inet {method}")
    if iface.address is not None:
        lines.append(f"\taddress {iface.address.with_prefixlen}")
    if iface.gateway is not None:
        lines.append(f"\tgateway {iface.gateway}")
    lines += [f"\t{opt}" for opt in options]
    return "\n".join(lines)


def _uplink_options(host: HostNet, iface: Iface) -> list[str]:
    """The routed setup's lines on the uplink: forwarding, and proxy ARP so the provider's router, asking for a
    guest's address on the uplink's wire, gets the node's MAC and sends the packets to the node."""
    routed = [b.name for b in host.bridges if b.routed is not None and b.routed.uplink == iface.name]
    if not routed:
        return []
    return ["post-up echo 1 > /proc/sys/net/ipv4/ip_forward",
            f"post-up echo 1 > /proc/sys/net/ipv4/conf/{iface.name}/proxy_arp"]


def _nic(host: HostNet, nic: Nic) -> str:
    return _stanza(nic, _uplink_options(host, nic), auto=nic.address is not None)


def _bond(host: HostNet, bond: Bond) -> str:
    options = [f"bond-slaves {' '.join(bond.slaves)}", f"bond-miimon {bond.miimon}", f"bond-mode {bond.mode}"]
    if bond.xmit_hash_policy:
        options.append(f"bond-xmit-hash-policy {bond.xmit_hash_policy}")
    if bond.primary:
        options.append(f"bond-primary {bond.primary}")
    return _stanza(bond, [*options, *_uplink_options(host, bond)], auto=True)


def _vlan(host: HostNet, vlan: Vlan) -> str:
    return _stanza(vlan, _uplink_options(host, vlan), auto=vlan.address is not None)


def _bridge(host: HostNet, bridge: Bridge) -> str:
    options = [f"bridge-ports {' '.join(bridge.ports) or 'none'}", "bridge-stp off", "bridge-fd 0"]
    if bridge.vlan_aware:
        options += ["bridge-vlan-aware yes", f"bridge-vids {bridge.vids or '2-4094'}"]
    options += _uplink_options(host, bridge)
    comments = []
    if bridge.nat is not None:
        options += _nat_options(bridge)
    if bridge.dhcp is not None:
        server = "the LAN's DHCP server" if bridge.ports else "a DHCP server on this node (dnsmasq, or PVE's SDN)"
        comments.append(f"guests get addresses {bridge.dhcp.start}-{bridge.dhcp.end} by DHCP from {server}, "
                        "not from this file")
    return _stanza(bridge, options, auto=True, comments=comments)


def _nat_options(bridge: Bridge) -> list[str]:
    """Masquerading as in the PVE guide: forwarding on, the bridge's subnet leaving with the out interface's
    address; with the PVE firewall on, the conntrack zone rule (guests' traffic enters through fwbr* bridges,
    whose connection tracking would otherwise not match the masqueraded replies)."""
    assert bridge.nat is not None and bridge.address is not None
    rule = f"-s '{bridge.address.network}' -o {bridge.nat.out} -j MASQUERADE"
    lines = ["post-up   echo 1 > /proc/sys/net/ipv4/ip_forward",
             f"post-up   iptables -t nat -A POSTROUTING {rule}",
             f"post-down iptables -t nat -D POSTROUTING {rule}"]
    if bridge.nat.firewall:
        lines += ["post-up   iptables -t raw -I PREROUTING -i fwbr+ -j CT --zone 1",
                  "post-down iptables -t raw -D PREROUTING -i fwbr+ -j CT --zone 1"]
    return lines
