"""NAT networks for ``network.mode: nat`` recipes on Proxmox VE, made idempotently.

A NAT recipe's ``network.bridge`` names either

- a node's Linux bridge (``vmbrN``, the networking chapter's ``vmbr1`` with masquerading set up in
  /etc/network/interfaces): imgbuild only checks, on the node the VM goes to, that the bridge exists
  and carries an address in the recipe's subnet, and otherwise names the host configuration to apply
  (``imgbuild host-net render``, shape ``nat``); or
- an SDN VNet (any other name, 2-8 letters and digits): imgbuild makes sure it exists, in a *simple*
  zone (``sdn_zone`` setting, default ``imgbuild``) with a subnet whose gateway and SNAT follow the
  recipe (plus a DHCP range, served by the zone's dnsmasq, when the recipe has no address), and applies
  the SDN configuration (``PUT /cluster/sdn``) only when something changed. A second make changes
  nothing. SDN with IPAM and DHCP needs Proxmox VE 8.1 (imgbuild needs 8.4 anyway).

The subnet is the recipe address's network; without an address, the /24 around its gateway, else the
chapter's 10.10.10.0/24 with gateway 10.10.10.1.

Following pve-network's API (src/PVE/API2/Network/SDN/*.pm): objects are created in the pending
configuration and listed with ``pending=1`` showing ``state`` new/changed/deleted and the pending values
under ``pending``; ``PUT /cluster/sdn`` commits everything pending, so imgbuild refuses to apply while
objects it did not make have pending changes (it would apply someone else's half-done edit).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from builder.errors import ImgbuildError, InvalidInput
from builder.progress import NullProgress, Progress
from builder.targets.base import VMSpec
from builder.targets.pve.client import PveClient, PveError
from builder.targets.pve.settings import SDN_ID, PveConfig

HOST_BRIDGE = re.compile(r"^vmbr\d+$")
DEFAULT_SUBNET = ipaddress.IPv4Network("10.10.10.0/24")


@dataclass(frozen=True)
class NatNetwork:
    vnet: str  # the bridge the NIC attaches to: a vnet imgbuild makes, or a node's Linux bridge
    sdn: bool  # True: an SDN vnet in *zone*; False: a Linux bridge (vmbrN) that must exist
    zone: str
    subnet: ipaddress.IPv4Network | ipaddress.IPv6Network
    gateway: str
    dhcp: bool  # the guest asks DHCP for its address: the subnet gets a DHCP range
    nameserver: str | None = None

    @property
    def subnet_id(self) -> str:
        """pve-network's subnet id: ``<zone>-<network>-<prefix>``."""
        return f"{self.zone}-{self.subnet.network_address}-{self.subnet.prefixlen}"

    def dhcp_range(self) -> tuple[str, str]:
        """The upper half of the subnet's hosts (the lower half stays for static guests), gateway excluded."""
        hosts = [h for h in self.subnet.hosts() if str(h) != self.gateway]
        start = hosts[len(hosts) // 2] if len(hosts) > 4 else hosts[0]
        return str(start), str(hosts[-1])

    def describe(self) -> str:
        kind = f"SDN vnet {self.vnet} (zone {self.zone})" if self.sdn else f"bridge {self.vnet}"
        return f"{kind}, subnet {self.subnet} via {self.gateway}" + (", DHCP" if self.dhcp else "")


def requested(spec: VMSpec, zone: str) -> NatNetwork | None:
    """The NAT network a spec asks for (None for bridged guests)."""
    net = spec.network
    if not net.nat or not spec.nics:
        return None
    bridge = spec.nics[0].bridge
    if net.address:
        iface = ipaddress.ip_interface(net.address)
        subnet = iface.network
        gateway = net.gateway or str(next(subnet.hosts()))
    elif net.gateway:
        subnet = ipaddress.ip_interface(f"{net.gateway}/24").network
        gateway = net.gateway
    else:
        subnet, gateway = DEFAULT_SUBNET, "10.10.10.1"
    sdn = not HOST_BRIDGE.match(bridge)
    if sdn and not (SDN_ID.match(bridge) and 2 <= len(bridge) <= 8):
        raise InvalidInput(f"network.bridge {bridge!r} of a nat recipe is neither a host bridge (vmbrN) nor an SDN "
                           "vnet name (2-8 letters and digits, starting with a letter)")
    return NatNetwork(vnet=bridge, sdn=sdn, zone=zone if sdn else "localnetwork", subnet=subnet, gateway=gateway,
                      dhcp=net.address is None, nameserver=net.nameservers[0] if net.nameservers else None)


# --- reading pve-network's pending view ------------------------------------------------------------


def effective(entry: dict[str, Any]) -> dict[str, Any]:
    """An object as it will be once applied: running values overridden by pending ones (``deleted`` drops)."""
    out = {k: v for k, v in entry.items() if k not in ("pending", "state", "digest")}
    for key, value in (entry.get("pending") or {}).items():
        if value == "deleted":
            out.pop(key, None)
        else:
            out[key] = value
    return out


def _listing(client: PveClient, path: str) -> dict[str, dict[str, Any]]:
    key = {"zones": "zone", "vnets": "vnet", "subnets": "subnet"}[path.rsplit("/", 1)[-1]]
    return {str(e.get(key)): e for e in client.get(path, pending=1) or []}


def _is_true(value: Any) -> bool:
    return str(value) in ("1", "true", "True")


def host_config_hint(network: NatNetwork, node: str) -> str:
    address = f"{network.gateway}/{network.subnet.prefixlen}"
    return (f"configure {network.vnet} on {node} as the networking chapter's NAT bridge ({address}, masqueraded "
            f"behind the uplink): render it with `imgbuild host-net render HOST.yaml` (a bridge of shape `nat`: "
            f"{network.vnet} {address}), apply it there (ifreload -a); or name an SDN vnet in network.bridge "
            f"(e.g. natnet) and imgbuild makes the NAT network itself")


# --- before anything changes ---------------------------------------------------------------------------


def check(client: PveClient, node: str, network: NatNetwork, config: PveConfig) -> None:
    """What can be known before changing anything: the host bridge and its address, or that the SDN objects
    imgbuild would make or use do not clash with others."""
    if not network.sdn:
        _check_host_bridge(client, node, network)
        return
    zones = _listing(client, "/cluster/sdn/zones")
    zone = zones.get(network.zone)
    if zone is not None and effective(zone).get("type") != "simple":
        raise ImgbuildError(f"SDN zone {network.zone} exists and is a {effective(zone).get('type')} zone, not a simple one",
                            detail=f"choose another zone name with {config.setting_name('sdn_zone')}")
    vnets = _listing(client, "/cluster/sdn/vnets")
    vnet = vnets.get(network.vnet)
    if vnet is not None and effective(vnet).get("zone") != network.zone:
        raise ImgbuildError(f"SDN vnet {network.vnet} already exists in zone {effective(vnet).get('zone')}, not in "
                            f"{network.zone}", detail="name another vnet in network.bridge, or set sdn_zone to its zone")
    foreign = _foreign_pending(client, network, zones, vnets)
    if foreign:
        raise ImgbuildError("the SDN configuration has pending changes imgbuild did not make: "
                            + ", ".join(foreign),
                            detail="applying the NAT network (PUT /cluster/sdn) would apply them too; apply or revert "
                                   "them first (Datacenter > SDN in the web UI)")


def _check_host_bridge(client: PveClient, node: str, network: NatNetwork) -> None:
    bridges = {str(i.get("iface")): i for i in client.get(f"/nodes/{node}/network", type="any_bridge") or []}
    entry = bridges.get(network.vnet)
    if entry is None:
        raise ImgbuildError(f"bridge {network.vnet} does not exist on node {node} (this NAT recipe needs it)",
                            detail=host_config_hint(network, node))
    cidrs = [str(entry[k]) for k in ("cidr", "cidr6") if entry.get(k)]
    addresses = [ipaddress.ip_interface(c) for c in cidrs]
    if not any(a.ip in network.subnet for a in addresses):
        have = ", ".join(cidrs) or "no address"
        raise ImgbuildError(f"bridge {network.vnet} on node {node} has {have}, not an address in {network.subnet}: "
                            "it is not this recipe's NAT network", detail=host_config_hint(network, node))


def _foreign_pending(client: PveClient, network: NatNetwork, zones: dict[str, dict[str, Any]],
                     vnets: dict[str, dict[str, Any]]) -> list[str]:
    out = [f"zone {z} ({e['state']})" for z, e in sorted(zones.items()) if e.get("state") and z != network.zone]
    for name, entry in sorted(vnets.items()):
        if entry.get("state") and name != network.vnet:
            out.append(f"vnet {name} ({entry['state']})")
    return out


def in_place(client: PveClient, network: NatNetwork) -> bool:
    """Whether the zone, vnet and subnet exist as wanted and are applied: then a make changes nothing in SDN
    (and needs no SDN.Allocate). A token that may not read SDN sees nothing, so it is never in place."""
    zone = _listing(client, "/cluster/sdn/zones").get(network.zone)
    vnet = _listing(client, "/cluster/sdn/vnets").get(network.vnet)
    if zone is None or vnet is None or zone.get("state") or vnet.get("state"):
        return False
    if network.dhcp and effective(zone).get("dhcp") != "dnsmasq":
        return False
    subnet = _listing(client, f"/cluster/sdn/vnets/{network.vnet}/subnets").get(network.subnet_id)
    if subnet is None or subnet.get("state"):
        return False
    have = effective(subnet)
    return all(_same(k, v, have.get(k)) for k, v in _wanted_subnet(network).items())


def _wanted_subnet(network: NatNetwork) -> dict[str, Any]:
    want: dict[str, Any] = {"gateway": network.gateway, "snat": 1}
    if network.dhcp:
        start, end = network.dhcp_range()
        want["dhcp-range"] = f"start-address={start},end-address={end}"
        if network.nameserver:
            want["dhcp-dns-server"] = network.nameserver
    return want


# --- making it ---------------------------------------------------------------------------------------------


def ensure(client: PveClient, network: NatNetwork, *, wait: float, progress: Progress = NullProgress()) -> bool:
    """Create or adjust the zone, vnet and subnet, and apply when anything changed (or an earlier run left
    its objects pending). Returns whether the SDN configuration was applied."""
    changed: list[str] = []
    zones = _listing(client, "/cluster/sdn/zones")
    zone = zones.get(network.zone)
    if zone is None:
        params: dict[str, Any] = {"zone": network.zone, "type": "simple", "ipam": "pve"}
        if network.dhcp:
            params["dhcp"] = "dnsmasq"
        client.post("/cluster/sdn/zones", **params)
        changed.append(f"zone {network.zone}")
    elif network.dhcp and effective(zone).get("dhcp") != "dnsmasq":
        client.put(f"/cluster/sdn/zones/{network.zone}", dhcp="dnsmasq")
        changed.append(f"DHCP in zone {network.zone}")
    pending = [network.zone] if zone is not None and zone.get("state") else []
    vnets = _listing(client, "/cluster/sdn/vnets")
    vnet = vnets.get(network.vnet)
    if vnet is None:
        client.post("/cluster/sdn/vnets", vnet=network.vnet, zone=network.zone)
        changed.append(f"vnet {network.vnet}")
    elif vnet.get("state"):
        pending.append(network.vnet)
    subnets = _listing(client, f"/cluster/sdn/vnets/{network.vnet}/subnets")
    want = _wanted_subnet(network)
    current = subnets.get(network.subnet_id)
    if current is None:
        client.post(f"/cluster/sdn/vnets/{network.vnet}/subnets", subnet=str(network.subnet), type="subnet", **want)
        changed.append(f"subnet {network.subnet}")
    else:
        have = effective(current)
        differs = [k for k, v in want.items() if not _same(k, v, have.get(k))]
        if differs:
            client.put(f"/cluster/sdn/vnets/{network.vnet}/subnets/{quote(network.subnet_id, safe='')}", **want)
            changed.append(f"subnet {network.subnet} ({', '.join(differs)})")
        elif current.get("state"):
            pending.append(network.subnet_id)
    if not changed and not pending:
        progress.note(f"NAT network {network.describe()}: already in place")
        return False
    progress.step(f"NAT network: {', '.join(changed) or 'pending ' + ', '.join(pending)}; applying the SDN "
                  "configuration")
    foreign = _foreign_pending(client, network, _listing(client, "/cluster/sdn/zones"),
                               _listing(client, "/cluster/sdn/vnets"))
    if foreign:
        raise ImgbuildError("the SDN configuration has pending changes imgbuild did not make: " + ", ".join(foreign),
                            detail="imgbuild made its own objects but did not apply them; apply or revert the others "
                                   "first (Datacenter > SDN), then run again")
    try:
        client.run("PUT", "/cluster/sdn", what="applying the SDN configuration", wait=wait)
    except PveError as exc:
        raise ImgbuildError(f"applying the SDN configuration failed: {exc.message}", detail=exc.detail) from None
    return True


def _same(key: str, want: Any, have: Any) -> bool:
    if have is None:
        return False
    if key == "snat":
        return _is_true(have) == _is_true(want)
    if key == "dhcp-range":
        items = have if isinstance(have, list) else [have]
        return [_range_text(i) for i in items] == [_range_text(want)]
    return str(have) == str(want)


def _range_text(value: Any) -> str:
    if isinstance(value, dict):
        return f"start-address={value.get('start-address')},end-address={value.get('end-address')}"
    return str(value)
