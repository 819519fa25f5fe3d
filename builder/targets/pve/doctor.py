"""``imgbuild doctor``: what a Proxmox VE target offers and whether the token may do what imgbuild needs.

Read-only: the version, every node (online or not, its version, memory and CPU), each online node's
storages (content types, shared), bridges and SDN vnets, the SDN zones, the token's effective
privileges (``GET /access/permissions``), and the privileges a job needs on this version
(``privileges.py``) compared with the token's own answer for each path. The findings are a typed
``Diagnosis``; the CLI prints it as text or JSON.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from builder.errors import ImgbuildError
from builder.targets.base import VMSpec
from builder.targets.pve import nat, privileges, vmconfig
from builder.targets.pve.client import PveError
from builder.targets.pve.cluster import ClusterView
from builder.targets.pve.target import MIN_VERSION, PveTarget, check_release, pve_release


@dataclass
class NodeReport:
    name: str
    online: bool
    version: str | None = None
    mem: int | None = None
    maxmem: int | None = None
    cpu: float | None = None
    storages: list[dict[str, Any]] = field(default_factory=list)  # storage, type, content, shared
    bridges: list[dict[str, Any]] = field(default_factory=list)  # iface, type, cidr


@dataclass
class Diagnosis:
    target: str
    url: str
    version: str
    supported: bool
    token: str
    nodes: list[NodeReport] = field(default_factory=list)
    sdn_zones: list[dict[str, Any]] = field(default_factory=list)
    sdn_vnets: list[dict[str, Any]] = field(default_factory=list)
    privileges: dict[str, list[str]] = field(default_factory=dict)  # the token's effective privileges per path
    needs: list[dict[str, Any]] = field(default_factory=list)  # path, privileges, why, missing
    problems: list[str] = field(default_factory=list)
    advice: str = ""

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["ok"] = self.ok
        return out


def diagnose(target: PveTarget, spec: VMSpec | None = None, *, method: str = "image", console: bool = False) -> Diagnosis:
    """Everything ``doctor`` reports. *spec*: a recipe's VM (None: the needs of a typical make)."""
    client, config = target.client, target.config
    version = client.get("/version") or {}
    diag = Diagnosis(target=target.name, url=config.url, version=str(version.get("version") or version.get("release")),
                     supported=True, token=config.token_id)
    try:
        check_release(version, config.url)
    except ImgbuildError as exc:
        diag.supported = False
        diag.problems.append(exc.message)
    view = ClusterView.parse(client.get("/cluster/resources") or [])
    for name in sorted(view.nodes):
        info = view.nodes[name]
        node = NodeReport(name, info.online, mem=info.mem, maxmem=info.maxmem, cpu=info.cpu)
        diag.nodes.append(node)
        if not info.online:
            continue
        try:
            node_version = client.get(f"/nodes/{name}/version") or {}
            node.version = str(node_version.get("version"))
            if pve_release(node_version) < MIN_VERSION:
                diag.problems.append(f"node {name} runs Proxmox VE {node.version}: imgbuild needs 8.4 or later there")
            node.storages = [{"storage": s.get("storage"), "type": s.get("type"),
                              "content": sorted(c for c in str(s.get("content", "")).split(",") if c),
                              "shared": bool(int(s.get("shared") or 0))}
                             for s in client.get(f"/nodes/{name}/storage") or []]
            node.bridges = [{"iface": b.get("iface"), "type": b.get("type"), "cidr": b.get("cidr")}
                            for b in client.get(f"/nodes/{name}/network", type="any_bridge") or []]
        except PveError as exc:
            diag.problems.append(f"node {name}: {exc.message}")
    if config.node and config.node not in view.nodes:
        diag.problems.append(f"the pinned node {config.node} does not exist (nodes: {', '.join(sorted(view.nodes))})")
    elif config.node and not view.nodes[config.node].online:
        diag.problems.append(f"the pinned node {config.node} is offline")
    if not view.online:
        diag.problems.append("no node is online")
    try:
        diag.sdn_zones = [{"zone": z.get("zone"), "type": z.get("type"), "state": z.get("state")}
                          for z in client.get("/cluster/sdn/zones", pending=1) or []]
        diag.sdn_vnets = [{"vnet": v.get("vnet"), "zone": v.get("zone") or (v.get("pending") or {}).get("zone"),
                           "state": v.get("state")} for v in client.get("/cluster/sdn/vnets", pending=1) or []]
    except PveError as exc:
        diag.problems.append(f"SDN: {exc.message}")
    tree = client.get("/access/permissions") or {}
    diag.privileges = {path: sorted(p for p, v in privs.items() if v is not None) for path, privs in sorted(tree.items())}
    _check_needs(target, diag, view, spec, method, console)
    return diag


def _check_needs(target: PveTarget, diag: Diagnosis, view: ClusterView, spec: VMSpec | None, method: str,
                 console: bool) -> None:
    config = target.config
    major = pve_release({"release": diag.version})[0] if diag.version[:1].isdigit() else 9
    vmid = int(target.client.get("/cluster/nextid"))
    network = nat.requested(spec, config.sdn_zone) if spec is not None else None
    pinned = (spec.node if spec is not None else None) or config.node
    nodes = [pinned] if pinned else view.online
    if spec is not None:
        keys = tuple(vmconfig.create_params(spec, vmid=vmid, disk_storage=config.disk_storage))
        bridges = tuple(target._bridge_zone(nic.bridge, nic.vlan, network) for nic in spec.nics)
    else:
        keys = ("name", "cores", "memory", "cpu", "agent", "vga", "serial0", "boot", "virtio0", "ide2", "net0",
                "ostype", "description", "tags")
        bridges = tuple({("localnetwork", str(b["iface"]), None) for n in diag.nodes for b in n.bridges
                         if b.get("type") == "bridge"}) or (("localnetwork", "vmbr0", None),)
    plan = privileges.Plan(
        major=major, vm_path=f"/vms/{vmid}", vm_keys=keys, iso_storage=config.iso_storage,
        image_storage=config.image_storage if method == "image" else None, disk_storage=config.disk_storage,
        bridges=tuple(sorted(bridges)), node_paths=() if pinned else tuple(f"/nodes/{n}" for n in nodes),
        console=console or spec is None, clone_from="/vms" if spec is None else None,
        sdn_zone=network.zone if network and network.sdn else None,
        sdn_vnet=network.vnet if network and network.sdn else None, new_zone=bool(network and network.sdn))
    required = privileges.needs(plan)
    have = {path: target.privileges_on(path) for path in {n.path for n in required}}
    missing = privileges.shortfall(required, have)
    lacking = {(need.path, need.why): privs for need, privs in missing.missing}
    diag.needs = [{"path": n.path, "privileges": list(n.privs), "any_of": n.any_of, "why": n.why,
                   "missing": list(lacking.get((n.path, n.why), ()))} for n in required]
    if missing:
        diag.problems.append(f"the token lacks {sum(len(p) for _, p in missing.missing)} privilege(s) imgbuild needs")
        diag.advice = privileges.advice(missing, config.token_id, major)
