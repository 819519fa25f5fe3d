"""Software-defined networking (pve-network): zones, vnets and subnets, pending until applied.

Configuration changes (``POST/PUT/DELETE /cluster/sdn/...``) edit the pending configuration
(sdn/zones.cfg, vnets.cfg, subnets.cfg); ``PUT /cluster/sdn`` commits it as the running configuration
(``commit_config`` in src/PVE/Network/SDN.pm) and reloads every node's network in a task. Only applied
vnets exist as bridges on the nodes (``get_local_vnets``), so a VM on a vnet that was never applied
cannot start.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.pvesim.access import Access


class Sdn:
    KINDS = ("zones", "vnets", "subnets")

    def __init__(self, access: Access) -> None:
        self.access = access
        self.pending: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in self.KINDS}
        self.running: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in self.KINDS}
        self.applied_once = False

    # --- what the rest of the node needs ---------------------------------------------------------
    def zone_of(self, vnet: str) -> str | None:
        """The zone of a vnet (pending config, as check_vnet_access reads vnets.cfg), None for a bridge."""
        entry = self.pending["vnets"].get(vnet)
        return str(entry["zone"]) if entry else None

    def _zone_on(self, zone: dict[str, Any], node: str) -> bool:
        nodes = zone.get("nodes")
        return not nodes or node in str(nodes).split(",")

    def vnet_applied(self, vnet: str, node: str) -> bool:
        entry = self.running["vnets"].get(vnet)
        if not entry:
            return False
        zone = self.running["zones"].get(str(entry["zone"]))
        return zone is not None and self._zone_on(zone, node)

    def local_vnets(self, node: str, user: str) -> list[dict[str, Any]]:
        """pve-network src/PVE/Network/SDN.pm get_local_vnets: applied vnets of zones on *node* the user
        may audit, use or allocate; listed by GET /nodes/{node}/network as type 'vnet'."""
        out = []
        for name, entry in sorted(self.running["vnets"].items()):
            zone = str(entry["zone"])
            if not self.vnet_applied(name, node):
                continue
            if not self.access.has(user, f"/sdn/zones/{zone}/{name}", ["SDN.Audit", "SDN.Use", "SDN.Allocate"],
                                   any_of=True):
                continue
            out.append({"iface": name, "type": "vnet", "active": 1, "zone": zone})
        return out

    def resources(self, nodes: list[str], user: str) -> list[dict[str, Any]]:
        """/cluster/resources type sdn: each applied zone on each node (pve-manager PVE/API2/Cluster.pm)."""
        out = []
        for node in nodes:
            for zone, entry in sorted(self.running["zones"].items()):
                if self._zone_on(entry, node) and self.access.has(user, f"/sdn/zones/{zone}", ["SDN.Audit"]):
                    out.append({"id": f"sdn/{node}/{zone}", "sdn": zone, "node": node, "type": "sdn",
                                "status": "ok"})
        return out

    def commit(self) -> None:
        self.running = copy.deepcopy(self.pending)
        self.applied_once = True
