"""Rules a host description must follow that its schema cannot express.

Runs on a description that passed the schema, with defaults filled in; returns (field path, message) pairs,
every problem at once. The checks follow what breaks a node: a NIC enslaved twice, two default routes,
overlapping subnets (the kernel routes one of them nowhere), a gateway the node cannot reach, a one-NIC
bond, a VLAN id a switch cannot carry.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Callable, Iterator
from typing import Any

from builder.hostnet.model import HASHING_MODES
from builder.recipe import values as v
from builder.recipe.problems import FieldPath, dotted
from builder.recipe.rules import run_guarded

Found = list[tuple[FieldPath, str]]

# Linux interface names: at most 15 bytes (IFNAMSIZ). Dots are left to VLAN interfaces (RAW.ID).
IFNAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")
VLAN_NAME = re.compile(r"^(?P<raw>[A-Za-z][A-Za-z0-9_-]*)\.(?P<id>\d+)$")
RESERVED = {"lo", "none", "all", "default"}
# Free text ends up in the interfaces file: ifupdown2 joins a line ending in a backslash with the next one,
# and renders the file as a Mako template on nodes where templates are on (the default), where ${...} runs
# Python and a line starting with % is a control line.
UNSAFE_TEXT = re.compile(r"[$%\\]")
VID_RANGE = re.compile(r"^(\d+)(?:-(\d+))?$")
VLAN_IDS = range(1, 4095)
KIND_NAMES = {"nic": "NICs", "bond": "bonds", "vlan": "VLAN interfaces", "bridge": "bridges"}


def rule_problems(data: dict[str, Any]) -> Found:
    """Every rule problem; a group that trips over a value the schema already refused is skipped."""
    groups: list[Callable[[], Found]] = [
        lambda: _text_problems(data),
        lambda: _name_problems(data),
        lambda: _use_problems(data),
        lambda: _bond_problems(data),
        lambda: _vlan_problems(data),
        lambda: _address_problems(data),
        lambda: _bridge_problems(data),
        lambda: _lab_problems(data),
    ]
    return run_guarded(groups)


def _addressed(data: dict[str, Any]) -> Iterator[tuple[str, FieldPath, dict[str, Any]]]:
    """(interface name, field path, fields) of everything that may carry an address."""
    for kind in ("nics", "bonds", "bridges"):
        for name, fields in data[kind].items():
            yield name, (kind, name), fields
    for i, vlan in enumerate(data["vlans"]):
        yield f"{vlan['raw']}.{vlan['id']}", ("vlans", i), vlan


def _declared(data: dict[str, Any]) -> dict[str, str]:
    """Interface name -> what declares it ("nic", "bond", "bridge", "vlan")."""
    kinds: dict[str, str] = {}
    for kind in ("nics", "bonds", "bridges"):
        for name in data[kind]:
            kinds.setdefault(name, kind[:-1])
    for vlan in data["vlans"]:
        kinds.setdefault(f"{vlan['raw']}.{vlan['id']}", "vlan")
    return kinds


def _unknown(name: str, kinds: dict[str, str], wanted: tuple[str, ...]) -> str:
    choices = [n for n, k in kinds.items() if k in wanted]
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    plural = [KIND_NAMES[w] for w in wanted]
    what = plural[0] if len(plural) == 1 else f"{', '.join(plural[:-1])} or {plural[-1]}"
    vlan = VLAN_NAME.match(name)
    if vlan and int(vlan["id"]) not in VLAN_IDS:
        return f"VLAN id {vlan['id']} in {name!r} is outside 1-4094"
    if vlan and "vlan" in wanted:
        return f"no VLAN interface {name!r}: declare it under vlans (raw: {vlan['raw']}, id: {vlan['id']}){hint}"
    return f"{name!r} is not one of the description's {what} ({', '.join(choices) or 'none declared'}){hint}"


def _text_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    texts: list[tuple[FieldPath, Any]] = [(("description",), data["description"])]
    texts += [((*path, "comment"), fields.get("comment")) for _, path, fields in _addressed(data)]
    for path, text in texts:
        if not isinstance(text, str):
            continue
        bad = v.control_chars(text) or v.ascii_only(text)
        if bad is None and UNSAFE_TEXT.search(text):
            bad = "may not contain $, % or \\ (ifupdown2 reads them as template code or a line continuation)"
        if bad:
            found.append((path, bad))
    if "hostname" in data:
        bad = v.hostname(data["hostname"])
        if bad:
            found.append((("hostname",), bad))
    return found


def _name_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    seen: dict[str, FieldPath] = {}
    for name, path, _ in _addressed(data):
        if path[0] == "vlans":
            if len(name) > 15:
                found.append(((*path, "id"), f"the VLAN interface name {name!r} is longer than 15 characters"))
        elif name in RESERVED or not IFNAME.match(name):
            found.append((path, f"{name!r} is not an interface name: a letter, then letters, digits, '-' or '_', at most "
                                "15 characters (no dots: VLAN interfaces are declared under vlans)"
                          if name not in RESERVED else f"{name!r} is a reserved name"))
        if name in seen:
            found.append((path, f"{name} is already declared as {dotted(seen[name])}"))
        seen.setdefault(name, path)
    return found


def _use_problems(data: dict[str, Any]) -> Found:
    """Every NIC, bond and VLAN interface is enslaved at most once (a port of one bridge or a member of one bond),
    and what is enslaved carries no address of its own."""
    found: Found = []
    kinds = _declared(data)
    used: dict[str, FieldPath] = {}

    def use(name: str, path: FieldPath, wanted: tuple[str, ...], what: str) -> None:
        if kinds.get(name) not in wanted:
            found.append((path, _unknown(name, kinds, wanted)))
            return
        if name in used:
            found.append((path, f"{name} is already used by {dotted(used[name])}: a NIC can be a port of one bridge "
                                f"or a member of one bond only"))
            return
        used[name] = path
        fields = _fields_of(data, name)
        if fields.get("address"):
            found.append((path, f"{name} is {what} and cannot carry an address of its own; put the address on "
                                f"{dotted(path[:2])}"))

    for bond, fields in data["bonds"].items():
        for i, slave in enumerate(fields["slaves"]):
            use(slave, ("bonds", bond, "slaves", i), ("nic",), f"a member of {bond}")
    for bridge, fields in data["bridges"].items():
        for i, port in enumerate(fields["ports"]):
            use(port, ("bridges", bridge, "ports", i), ("nic", "bond", "vlan"), f"a port of {bridge}")
    return found


def _fields_of(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next((fields for n, _, fields in _addressed(data) if n == name), {})


def _bond_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    for name, bond in data["bonds"].items():
        base = ("bonds", name)
        if len(bond["slaves"]) < 2:
            found.append(((*base, "slaves"), f"a bond needs at least two NICs; {name} has {len(bond['slaves'])}"))
        if len(set(bond["slaves"])) != len(bond["slaves"]):
            found.append(((*base, "slaves"), "a NIC is listed twice"))
        if bond.get("xmit_hash_policy") and bond["mode"] not in HASHING_MODES:
            found.append(((*base, "xmit_hash_policy"), f"only used with mode {', '.join(HASHING_MODES)}, not {bond['mode']}"))
        if bond.get("primary") is not None:
            if bond["mode"] != "active-backup":
                found.append(((*base, "primary"), f"only used with mode active-backup, not {bond['mode']}"))
            elif bond["primary"] not in bond["slaves"]:
                found.append(((*base, "primary"), f"{bond['primary']!r} is not one of the bond's slaves"))
    return found


def _vlan_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    kinds = _declared(data)
    for i, vlan in enumerate(data["vlans"]):
        if vlan["id"] not in VLAN_IDS:
            found.append((("vlans", i, "id"), f"VLAN id {vlan['id']} is outside 1-4094"))
        raw = vlan["raw"]
        kind = kinds.get(raw)
        if kind not in ("nic", "bond", "bridge"):
            found.append((("vlans", i, "raw"), _unknown(raw, kinds, ("nic", "bond", "bridge"))))
        elif kind == "bridge" and not data["bridges"][raw]["vlan_aware"]:
            found.append((("vlans", i, "raw"), f"a VLAN on bridge {raw} needs vlan_aware: true on it (or tag a NIC or "
                                                "bond instead and bridge that: the traditional setup)"))
    for name, bridge in data["bridges"].items():
        if bridge.get("vids") is None:
            continue
        path = ("bridges", name, "vids")
        if not bridge["vlan_aware"]:
            found.append((path, "only used with vlan_aware: true"))
        for part in str(bridge["vids"]).split():
            m = VID_RANGE.match(part)
            if not m:
                found.append((path, f"{part!r} is not a VLAN id or a range such as 2-4094"))
                continue
            low, high = int(m[1]), int(m[2] or m[1])
            for vid in (low, high):
                if vid not in VLAN_IDS:
                    found.append((path, f"VLAN id {vid} is outside 1-4094"))
            if low > high:
                found.append((path, f"the range {part} runs backwards"))
    return found


def _address_problems(data: dict[str, Any]) -> Found:
    """Addresses and gateways parse, each gateway lies in its own subnet, subnets do not overlap, and the node has
    at most one default gateway."""
    found: Found = []
    nets: list[tuple[ipaddress.IPv4Network, FieldPath]] = []
    gateway_at: FieldPath | None = None
    for _name, path, fields in _addressed(data):
        iface = None
        if fields.get("address") is not None:
            bad = _ipv4_interface(fields["address"])
            if bad:
                found.append(((*path, "address"), bad))
            else:
                iface = ipaddress.IPv4Interface(fields["address"])
                for other, other_path in nets:
                    if iface.network.overlaps(other):
                        found.append(((*path, "address"), f"subnet {iface.network} overlaps {other} of "
                                                          f"{dotted((*other_path, 'address'))}"))
                        break
                nets.append((iface.network, path))
        if fields.get("gateway") is None:
            continue
        gw_path = (*path, "gateway")
        try:
            gateway = ipaddress.IPv4Address(fields["gateway"])
        except ValueError:
            found.append((gw_path, f"{fields['gateway']!r} is not an IPv4 address"))
            continue
        if fields.get("address") is None:
            found.append((gw_path, "a gateway needs an address on the same interface"))
        elif iface is not None:
            if gateway not in iface.network:
                found.append((gw_path, f"{gateway} is outside the subnet {iface.network} of {dotted((*path, 'address'))}"))
            elif gateway == iface.ip:
                found.append((gw_path, "the gateway cannot be the interface's own address"))
        if gateway_at is not None:
            found.append((gw_path, f"a second default gateway: {dotted(gateway_at)} already has one (a node has one "
                                   "default route)"))
        gateway_at = gateway_at or gw_path
    return found


def _ipv4_interface(text: Any) -> str | None:
    if not isinstance(text, str) or "/" not in text:
        return f"{text!r} is not an IPv4 address with a prefix length such as 192.168.1.10/24"
    try:
        iface = ipaddress.IPv4Interface(text)
    except ValueError:
        return f"{text!r} is not an IPv4 address with a prefix length such as 192.168.1.10/24"
    net = iface.network
    if net.prefixlen < 31 and iface.ip in (net.network_address, net.broadcast_address):
        return f"{iface.ip} is the {'network' if iface.ip == net.network_address else 'broadcast'} address of {net}"
    return None


def _address_of(data: dict[str, Any], name: str) -> ipaddress.IPv4Interface | None:
    text = _fields_of(data, name).get("address")
    return ipaddress.IPv4Interface(text) if text and _ipv4_interface(text) is None else None


def _bridge_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    kinds = _declared(data)
    for name, bridge in data["bridges"].items():
        base = ("bridges", name)
        nat, routed = bridge.get("nat"), bridge.get("routed")
        if nat and routed:
            found.append(((*base, "routed"), "a bridge is either NAT or routed, not both"))
        for key, other, what in (("nat", nat and nat["out"], "out"), ("routed", routed and routed["uplink"], "uplink")):
            if not other:
                continue
            path = (*base, key, what)
            if bridge.get("address") is None:
                found.append(((*base, "address"), f"a {key} bridge needs an address: its guests' gateway"))
            if other == name:
                found.append((path, f"the {what} must be another interface than {name} itself"))
            elif other not in kinds:
                found.append((path, _unknown(other, kinds, ("nic", "bond", "vlan", "bridge"))))
            elif _fields_of(data, other).get("address") is None:
                found.append((path, f"{other} has no address: the {what} is where the node's own address is"))
        if routed and bridge["ports"]:
            found.append(((*base, "ports"), "a routed bridge has no ports: its guests are reached through the node's "
                                            "routing, not on the uplink's wire"))
        if bridge.get("dhcp"):
            found += _dhcp_problems(bridge, base)
    return found


def _dhcp_problems(bridge: dict[str, Any], base: FieldPath) -> Found:
    found: Found = []
    address = bridge.get("address")
    if address is None or _ipv4_interface(address):
        return [((*base, "dhcp"), "DHCP needs an address on the bridge: the range must lie in its subnet")]
    iface = ipaddress.IPv4Interface(address)
    ends = {}
    for key in ("start", "end"):
        try:
            ends[key] = ipaddress.IPv4Address(bridge["dhcp"][key])
        except ValueError:
            found.append(((*base, "dhcp", key), f"{bridge['dhcp'][key]!r} is not an IPv4 address"))
            continue
        if ends[key] not in iface.network or ends[key] in (iface.network.network_address, iface.network.broadcast_address):
            found.append(((*base, "dhcp", key), f"{ends[key]} is outside the hosts of {iface.network}"))
    if len(ends) == 2 and ends["start"] > ends["end"]:
        found.append(((*base, "dhcp", "end"), f"{ends['end']} comes before the start {ends['start']}"))
    elif len(ends) == 2:
        taken = [a for a in (iface.ip, _maybe_ip(bridge.get("gateway"))) if a is not None and ends["start"] <= a <= ends["end"]]
        if taken:
            found.append(((*base, "dhcp"), f"the range includes {taken[0]}, which is taken"))
    return found


def _maybe_ip(text: Any) -> ipaddress.IPv4Address | None:
    try:
        return ipaddress.IPv4Address(text) if text else None
    except ValueError:
        return None


def _lab_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    kinds = _declared(data)
    names: set[str] = set()
    for nic, client in data["lab"]["clients"].items():
        base = ("lab", "clients", nic)
        if kinds.get(nic) != "nic":
            found.append((base, _unknown(nic, kinds, ("nic",))))
            continue
        if not re.match(r"^[a-z][a-z0-9-]{0,19}$", client["name"]):
            found.append(((*base, "name"), f"{client['name']!r} is not a short role name (lower-case letters, digits, "
                                           "hyphens; at most 20)"))
        elif client["name"] in names or client["name"] == "node":
            found.append(((*base, "name"), f"{client['name']!r} is used twice (the node namespace is called node)"))
        names.add(client["name"])
        bad = _ipv4_interface(client["address"])
        if bad:
            found.append(((*base, "address"), bad))
            continue
        address = ipaddress.IPv4Interface(client["address"])
        segment = _address_of(data, nic) or next(
            (_address_of(data, b) for b, f in data["bridges"].items() if nic in f["ports"]), None)
        if segment is None:
            found.append((base, f"{nic} is neither a bridge port nor addressed: there is no network to put a client on"))
        elif address.network != segment.network:
            found.append(((*base, "address"), f"{address} is not in {segment.network}, the network on {nic}"))
        elif address.ip == segment.ip:
            found.append(((*base, "address"), f"{address.ip} is the node's own address"))
        if client.get("gateway") is not None:
            gw = _maybe_ip(client["gateway"])
            if gw is None or gw not in address.network:
                found.append(((*base, "gateway"), f"{client['gateway']!r} is not an address in {address.network}"))
    return found
