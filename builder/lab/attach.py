"""A guest's NIC in a lab: a tap device in the node namespace, enslaved to the bridge the recipe names.

Proxmox VE does the same for a VM (tap{vmid}i{n} in vmbrN). The tap carries the guest's name as its
interface alias, which is how `lab status` lists the guests on each bridge. QEMU opens the tap from
inside the node namespace (it runs there), so the guest's frames never pass through this machine's
own network.
"""

from __future__ import annotations

import hashlib

from builder.errors import ImgbuildError
from builder.lab import netns as ns
from builder.lab.plan import netns_name
from builder.lab.state import lab_lock, load_state
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


def plug(lab: str, vm: str, index: int, bridge: str, vlan: int | None = None) -> str:
    """Create the tap of NIC *index* of *vm* in the lab's bridge *bridge*; its name."""
    with lab_lock(lab):
        node = node_netns(lab)
        links = {link["ifname"]: link for link in ns.ip_json("-d", "link", "show", netns=node)}
        bridges = sorted(n for n, link in links.items() if link.get("linkinfo", {}).get("info_kind") == "bridge")
        if bridge not in bridges:
            raise ImgbuildError(f"lab {lab} has no bridge {bridge} (it has {', '.join(bridges) or 'none'})",
                                detail="the recipe's network.bridge names the bridge; the lab's host description "
                                       "declares the bridges")
        if vlan is not None and links[bridge]["linkinfo"].get("info_data", {}).get("vlan_filtering") != 1:
            raise ImgbuildError(f"the guest's NIC has VLAN tag {vlan}, but the lab's bridge {bridge} is not VLAN-aware",
                                detail="give the bridge vlan_aware: true in the host description (a kernel that "
                                       "allows VLAN filtering is needed), or drop network.vlan from the recipe")
        tap = tap_name(vm, index)
        if tap in links:
            ns.ip("link", "del", tap, netns=node)  # left by a VM that was not stopped through imgbuild
        ns.ip("tuntap", "add", tap, "mode", "tap", netns=node)
        try:
            ns.ip("link", "set", tap, "alias", f"{GUEST_ALIAS}{vm}", netns=node)
            ns.ip("link", "set", tap, "master", bridge, "up", netns=node)
            if vlan is not None:  # an access port in that VLAN, as PVE makes a tagged NIC on a VLAN-aware bridge
                run(["bridge", "-n", node, "vlan", "del", "dev", tap, "vid", "1"])
                run(["bridge", "-n", node, "vlan", "add", "dev", tap, "vid", str(vlan), "pvid", "untagged"])
        except BaseException:
            ns.ip("link", "del", tap, netns=node, check=False)
            raise
        return tap


def unplug(lab: str, tap: str) -> None:
    """Remove a guest's tap (nothing to do when the lab, or the tap, is gone already)."""
    node = netns_name(lab, "node")
    if ns.exists(node):
        ns.ip("link", "del", tap, netns=node, check=False)
