"""A guest's NIC in a lab: a tap device in the node namespace, enslaved to the bridge the recipe names.

Proxmox VE does the same for a VM (tap{vmid}i{n} in vmbrN). QEMU runs in the node namespace and makes the
tap itself (so it disappears with QEMU, however QEMU ends); `plug` then puts it in its bridge. The tap
carries the guest's name as its interface alias: that is how `lab status` lists the guests of a bridge.
"""

from __future__ import annotations

import hashlib
from typing import Any

from builder.errors import ImgbuildError
from builder.lab import netns as ns
from builder.lab.state import load_state
from builder.lab.status import GUEST_ALIAS
from builder.proc import run


def tap_name(vm: str, index: int) -> str:
    """A stable tap name for NIC *index* of VM *vm* (IFNAMSIZ allows 15 characters)."""
    return f"tap{hashlib.sha256(vm.encode()).hexdigest()[:8]}i{index}"


def node_netns(lab: str) -> str:
    """The node namespace of lab *lab*, which must be up."""
    state = load_state(lab)
    if state is None or not state.complete or not ns.exists(state.node):
        raise ImgbuildError(f"lab {lab} is not up", detail=f"build it first: imgbuild lab up --lab {lab}")
    return state.node


def _links(node: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ns.ip_json("-d", "link", "show", netns=node)}


def check_bridge(lab: str, bridge: str, vlan: int | None = None) -> str:
    """The node namespace, once sure a guest NIC can join *bridge* (with VLAN tag *vlan*) in lab *lab*."""
    node = node_netns(lab)
    links = _links(node)
    bridges = sorted(n for n, link in links.items() if link.get("linkinfo", {}).get("info_kind") == "bridge")
    if bridge not in bridges:
        raise ImgbuildError(f"lab {lab} has no bridge {bridge} (it has {', '.join(bridges) or 'none'})",
                            detail="the recipe's network.bridge names the bridge; the lab's host description "
                                   "declares the bridges")
    if vlan is not None and links[bridge]["linkinfo"].get("info_data", {}).get("vlan_filtering") != 1:
        raise ImgbuildError(f"the guest's NIC has VLAN tag {vlan}, but the lab's bridge {bridge} is not VLAN-aware",
                            detail="give the bridge vlan_aware: true in the host description (a kernel that "
                                   "allows VLAN filtering is needed), or drop network.vlan from the recipe")
    return node


def plug(lab: str, tap: str, vm: str, bridge: str, vlan: int | None = None) -> None:
    """Put the tap QEMU made for *vm* into *bridge*, up, with the guest's name as its alias."""
    node = check_bridge(lab, bridge, vlan)
    if tap not in _links(node):
        raise ImgbuildError(f"{vm}'s tap {tap} is missing from {node}: did QEMU start in the lab?")
    ns.ip("link", "set", tap, "alias", f"{GUEST_ALIAS}{vm}", netns=node)
    ns.ip("link", "set", tap, "master", bridge, "up", netns=node)
    if vlan is not None:  # an access port in that VLAN, as PVE makes a tagged NIC on a VLAN-aware bridge
        run(["bridge", "-n", node, "vlan", "del", "dev", tap, "vid", "1"])
        run(["bridge", "-n", node, "vlan", "add", "dev", tap, "vid", str(vlan), "pvid", "untagged"])
