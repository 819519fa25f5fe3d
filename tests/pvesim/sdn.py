"""Software-defined networking (pve-network): zones, vnets and subnets, pending until applied.

Configuration changes (``POST/PUT/DELETE /cluster/sdn/...``) edit the pending configuration
(sdn/zones.cfg, vnets.cfg, subnets.cfg); ``PUT /cluster/sdn`` commits it as the running configuration
(``commit_config`` in src/PVE/Network/SDN.pm) and reloads every node's network in a task. Only applied
vnets exist as bridges on the nodes (``get_local_vnets``), so a VM on a vnet that was never applied
cannot start.
"""

from __future__ import annotations

import copy
import hashlib
import ipaddress
import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from tests.pvesim.errors import ParamError, die
from tests.pvesim.formats import split_list as formats_split

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

    def digest(self, kind: str) -> str:
        return hashlib.sha1(json.dumps(self.pending[kind], sort_keys=True).encode()).hexdigest()


def route(method: str, template: str) -> Callable[[Handler], Handler]:
    def mark(fn: Handler) -> Handler:
        fn.route = (method, template)  # type: ignore[attr-defined]
        return fn

    return mark


Handler = Callable[..., Any]
KEY_OF = {"zones": "zone", "vnets": "vnet", "subnets": "subnet"}


class SdnApi:
    """The /cluster/sdn routes (pve-network src/PVE/API2/Network/SDN.pm, SDN/Zones.pm, Vnets.pm, Subnets.pm)."""

    def __init__(self, sdn: Sdn, api: Any) -> None:
        self.sdn = sdn
        self.api = api  # PveApi: tasks, nodes

    # --- helpers ------------------------------------------------------------------------------------
    @staticmethod
    def _encode(value: Any) -> str:
        return ",".join(value) if isinstance(value, list) else str(value)

    def _pending_view(self, kind: str) -> dict[str, dict[str, Any]]:
        """src/PVE/Network/SDN.pm pending_config: running values at the top, what differs in the
        configuration under 'pending', and a 'state' (new, changed, deleted)."""
        running, config = self.sdn.running[kind], self.sdn.pending[kind]
        out: dict[str, dict[str, Any]] = {}
        for oid, robj in running.items():
            cobj = config.get(oid)
            entry = out.setdefault(oid, {})
            for key, value in robj.items():
                entry[key] = value
                if not cobj:
                    entry["state"] = "deleted"
                elif key not in cobj:
                    entry.setdefault("pending", {})[key] = "deleted"
                    entry["state"] = "changed"
                elif self._encode(value) != self._encode(cobj[key]):
                    entry["state"] = "changed"
        for oid, cobj in config.items():
            robj = running.get(oid, {})
            entry = out.setdefault(oid, {})
            for key, value in cobj.items():
                if key in ("type", "vnet"):
                    entry[key] = value
                elif key not in robj or self._encode(value) != self._encode(robj[key]):
                    entry.setdefault("pending", {})[key] = value
                if not robj:
                    entry["state"] = "new"
                elif key not in robj:
                    entry["state"] = "changed"
            if entry.get("state"):
                entry.setdefault("pending", {})
        return out

    def _view(self, kind: str, p: dict[str, Any]) -> dict[str, dict[str, Any]]:
        if p.get("pending") == "1":
            return self._pending_view(kind)
        return copy.deepcopy(self.sdn.running[kind] if p.get("running") == "1" else self.sdn.pending[kind])

    @staticmethod
    def _ranges(entry: dict[str, Any]) -> list[dict[str, str]]:
        """src/PVE/Network/SDN/Subnets.pm get_dhcp_ranges: the property strings, parsed."""
        out = []
        for text in entry.get("dhcp-range") or []:
            parts = dict(part.split("=", 1) for part in str(text).split(",") if "=" in part)
            out.append({"start-address": parts.get("start-address", ""), "end-address": parts.get("end-address", "")})
        return out

    def _listed(self, kind: str, oid: str, entry: dict[str, Any]) -> dict[str, Any]:
        out = dict(entry)
        out[KEY_OF[kind]] = oid
        out["digest"] = self.sdn.digest(kind)
        if kind == "subnets":
            zone, network, mask = oid.split("-")
            out.update({"id": oid, "cidr": f"{network}/{mask}", "zone": zone, "network": network, "mask": mask})
            out["dhcp-range"] = self._ranges(entry)
        return out

    def _zone_of_vnet(self, vnet: str) -> str:
        entry = self.sdn.pending["vnets"].get(vnet) or self.sdn.running["vnets"].get(vnet) or {}
        return str(entry.get("zone", ""))

    @staticmethod
    def _options(p: dict[str, Any], *skip: str) -> dict[str, Any]:
        drop = {"lock-token", "digest", "delete", *skip}
        out: dict[str, Any] = {}
        for key, value in p.items():
            if key in drop:
                continue
            if key == "dhcp-range":
                value = value if isinstance(value, list) else str(value).split("\0")
            out[key] = value
        return out

    # --- zones --------------------------------------------------------------------------------------------
    @route("GET", "/cluster/sdn/zones")
    def zones_index(self, p: dict[str, Any], user: str) -> Any:
        view = self._view("zones", p)
        return [self._listed("zones", zid, e) for zid, e in sorted(view.items())
                if (not p.get("type") or e.get("type") == p["type"])
                and self.sdn.access.has(user, f"/sdn/zones/{zid}", ["SDN.Audit", "SDN.Allocate"], any_of=True)]

    @route("POST", "/cluster/sdn/zones")
    def zones_create(self, p: dict[str, Any], user: str) -> Any:
        zid = p["zone"]
        if zid in self.sdn.pending["zones"]:
            raise die(f"create sdn zone object failed: sdn zone object ID '{zid}' already defined")
        if p.get("ipam") and p["ipam"] != "pve":
            raise ParamError({"ipam": f"{p['ipam']} not existing"})
        self.sdn.pending["zones"][zid] = self._options(p, "zone")
        return None

    def _one(self, kind: str, oid: str, p: dict[str, Any]) -> dict[str, Any]:
        """GET of one object (its view as pending/running/config asks): die "sdn <kind> '<id>' does not exist"."""
        view = self._view(kind, p)
        if oid not in view:
            raise die(f"sdn {KEY_OF[kind]} '{oid}' does not exist")
        return self._listed(kind, oid, view[oid])

    @route("GET", "/cluster/sdn/zones/{zone}")
    def zone_get(self, p: dict[str, Any], user: str) -> Any:
        return self._one("zones", p["zone"], p)

    @route("PUT", "/cluster/sdn/zones/{zone}")
    def zone_update(self, p: dict[str, Any], user: str) -> Any:
        entry = self.sdn.pending["zones"].get(p["zone"])
        if entry is None:
            raise die(f"update sdn zone object failed: sdn zone '{p['zone']}' does not exist")
        if p.get("type"):
            raise ParamError({"type": "property is not defined in schema and the schema does not allow additional "
                                      "properties"})
        for key in formats_split(p.get("delete", "")):
            entry.pop(key, None)
        entry.update(self._options(p, "zone", "type"))
        return None

    # --- vnets --------------------------------------------------------------------------------------------
    @route("GET", "/cluster/sdn/vnets")
    def vnets_index(self, p: dict[str, Any], user: str) -> Any:
        view = self._view("vnets", p)
        out = []
        for vid, entry in sorted(view.items()):
            zone = entry.get("zone") or (entry.get("pending") or {}).get("zone")
            if self.sdn.access.has(user, f"/sdn/zones/{zone}/{vid}", ["SDN.Audit", "SDN.Allocate"], any_of=True):
                out.append(self._listed("vnets", vid, entry))
        return out

    @route("POST", "/cluster/sdn/vnets")
    def vnets_create(self, p: dict[str, Any], user: str) -> Any:
        vid, zone = p["vnet"], p["zone"]
        if vid in self.sdn.pending["vnets"]:
            raise die(f"create sdn vnet object failed: sdn vnet object ID '{vid}' already defined")
        if zone not in self.sdn.pending["zones"]:
            raise die(f"create sdn vnet object failed: zone '{zone}' does not exist")
        self.sdn.pending["vnets"][vid] = {"type": "vnet", **self._options(p, "vnet", "type")}
        return None

    @route("GET", "/cluster/sdn/vnets/{vnet}")
    def vnet_get(self, p: dict[str, Any], user: str) -> Any:
        return self._one("vnets", p["vnet"], p)

    # --- subnets ------------------------------------------------------------------------------------------
    def _check_vnet_access(self, user: str, vnet: str, privs: list[str]) -> str:
        # src/PVE/API2/Network/SDN/Subnets.pm $check_vnet_access: check_any on /sdn/zones/<zone>/<vnet>
        if vnet not in self.sdn.pending["vnets"] and vnet not in self.sdn.running["vnets"]:
            raise die(f"sdn vnet '{vnet}' does not exist")
        zone = self._zone_of_vnet(vnet)
        self.sdn.access.check(user, f"/sdn/zones/{zone}/{vnet}", privs, any_of=True)
        return zone

    @route("GET", "/cluster/sdn/vnets/{vnet}/subnets")
    def subnets_index(self, p: dict[str, Any], user: str) -> Any:
        self._check_vnet_access(user, p["vnet"], ["SDN.Audit", "SDN.Allocate"])
        view = self._view("subnets", p)
        return [self._listed("subnets", sid, e) for sid, e in sorted(view.items())
                if (e.get("vnet") or (e.get("pending") or {}).get("vnet")) == p["vnet"]]

    def _validate_subnet(self, cidr: str, entry: dict[str, Any]) -> None:
        # src/PVE/Network/SDN/SubnetPlugin.pm on_update_hook and validate_dhcp_ranges
        net = ipaddress.ip_network(cidr, strict=False)
        gateway = entry.get("gateway")
        if gateway and ipaddress.ip_address(gateway) not in net and net.prefixlen != 32:
            raise ParamError({"gateway": f"{gateway} is not in subnet {cidr}"})
        for rng in self._ranges(entry):
            start, end = rng["start-address"], rng["end-address"]
            if ipaddress.ip_address(start) > ipaddress.ip_address(end):
                raise ParamError({"dhcp-range": f"start-address {start} must be smaller than end-address {end}"})
            for which, addr in (("start-address", start), ("end-address", end)):
                if ipaddress.ip_address(addr) not in net:
                    raise ParamError({"dhcp-range": f"{which} {addr} is not in subnet {cidr}"})

    @route("POST", "/cluster/sdn/vnets/{vnet}/subnets")
    def subnets_create(self, p: dict[str, Any], user: str) -> Any:
        zone = self._check_vnet_access(user, p["vnet"], ["SDN.Allocate"])
        cidr = p["subnet"]
        sid = f"{zone}-{cidr.replace('/', '-')}"
        if sid in self.sdn.pending["subnets"]:
            raise die(f"create sdn subnet object failed: sdn subnet object ID '{sid}' already defined")
        entry = {"type": "subnet", **self._options(p, "subnet", "type")}
        if self.sdn.pending["vnets"].get(p["vnet"], {}).get("vlanaware") in ("1", 1):
            raise ParamError({"vnet": "you can't add a subnet on a vlanaware vnet"})
        self._validate_subnet(cidr, entry)
        self.sdn.pending["subnets"][sid] = entry
        return None

    @route("GET", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}")
    def subnet_get(self, p: dict[str, Any], user: str) -> Any:
        self._check_vnet_access(user, p["vnet"], ["SDN.Audit", "SDN.Allocate"])
        return self._one("subnets", p["subnet"], p)

    @route("PUT", "/cluster/sdn/vnets/{vnet}/subnets/{subnet}")
    def subnet_update(self, p: dict[str, Any], user: str) -> Any:
        self._check_vnet_access(user, p["vnet"], ["SDN.Allocate"])
        entry = self.sdn.pending["subnets"].get(p["subnet"])
        if entry is None:
            raise die(f"update sdn subnet object failed: sdn subnet '{p['subnet']}' does not exist")
        new = dict(entry)
        for key in formats_split(p.get("delete", "")):
            new.pop(key, None)
        new.update(self._options(p, "subnet", "type", "vnet"))
        _, network, mask = p["subnet"].split("-")
        self._validate_subnet(f"{network}/{mask}", new)
        self.sdn.pending["subnets"][p["subnet"]] = new
        return None

    # --- apply ----------------------------------------------------------------------------------------------
    @route("PUT", "/cluster/sdn")
    def apply(self, p: dict[str, Any], user: str) -> Any:
        # src/PVE/API2/Network/SDN.pm reload: commit_config (pending -> running), then a 'reloadnetworkall'
        # worker that reloads each node's network
        self.sdn.commit()
        nodes = [n for n, spec in self.api.nodes.items() if spec.online]

        def work(task: Any) -> None:
            for node in nodes:
                task.log(f"{node}: reloading network config")

        return self.api._task("reloadnetworkall", "", user, work)
