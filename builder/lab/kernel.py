"""What this machine's kernel lets a network namespace create, probed in a scratch namespace.

Some kernels (this project's build machines among them) refuse bond devices, VLAN devices and VLAN
filtering on bridges. A lab that needs one of them says so before it creates anything.
"""

from __future__ import annotations

from dataclasses import dataclass

from builder.errors import CommandFailed
from builder.hostnet.model import HostNet
from builder.lab import netns as ns
from builder.lab.plan import netns_name


@dataclass(frozen=True)
class Refusal:
    feature: str  # "bond devices" ...
    needed_by: str  # what in the description needs it
    error: str  # the kernel's answer


PROBES = {
    "bond devices": [["link", "add", "pb0", "type", "bond"]],
    "VLAN devices": [["link", "add", "pv0", "type", "veth", "peer", "name", "pv1"],
                     ["link", "add", "link", "pv0", "name", "pv0.5", "type", "vlan", "id", "5"]],
    "VLAN filtering on bridges": [["link", "add", "pbr0", "type", "bridge"],
                                  ["link", "set", "pbr0", "type", "bridge", "vlan_filtering", "1"]],
}


def needed_features(host: HostNet) -> dict[str, str]:
    """Kernel feature -> what in *host* needs it."""
    needs = {}
    if host.bonds:
        needs["bond devices"] = ", ".join(b.name for b in host.bonds)
    if host.vlans:
        needs["VLAN devices"] = ", ".join(v.name for v in host.vlans)
    aware = [b.name for b in host.bridges if b.vlan_aware]
    if aware:
        needs["VLAN filtering on bridges"] = ", ".join(aware)
    return needs


def refusals(host: HostNet, lab: str) -> list[Refusal]:
    """What *host* needs that this kernel refuses (empty when the lab can be built)."""
    needs = needed_features(host)
    if not needs:
        return []
    scratch = netns_name(lab, "probe")
    ns.add_netns(scratch)
    found = []
    try:
        for feature, needed_by in needs.items():
            for args in PROBES[feature]:
                try:
                    ns.ip(*args, netns=scratch)
                except CommandFailed as exc:
                    found.append(Refusal(feature, needed_by, exc.detail.strip() or exc.message))
                    break
    finally:
        ns.del_netns(scratch)
    return found
