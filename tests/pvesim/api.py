"""What the simulated node does for each API call (after the schema accepted the parameters).

Semantics follow qemu-server, pve-storage and pve-manager: synchronous refusals are HTTP 500
with PVE's message as the reason phrase; work is done in tasks (tasks.py) whose failures show only
in the task status and log. The handlers run with ``self.lock`` held; task bodies take it around
each change of state.
"""

from __future__ import annotations

import hashlib
import random
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.pvesim import formats
from tests.pvesim.access import Access, perm_error
from tests.pvesim.backends import AgentUnavailable, DiskFile, VMBackend
from tests.pvesim.cluster import NodeSpec, loopback_address
from tests.pvesim.console import VncTickets, listen_on_vnc_port, proxy_worker, vnc_password
from tests.pvesim.errors import ApiError, ParamError, die
from tests.pvesim.faults import FaultInjector
from tests.pvesim.formats import FormatError, format_size, parse_size, parse_volume_id
from tests.pvesim.schema import ApiSchema, parse_property_string, perl_str, print_property_string
from tests.pvesim.sdn import Sdn, SdnApi
from tests.pvesim.storage import StorageDef, Storages, Volume
from tests.pvesim.tasks import Task, TaskBehaviour, TaskFailed, TaskManager
from tests.pvesim.tls import NodeCert

NEW_DISK_RE = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")
DRIVE_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
NOT_CONFIG = {
    "node", "vmid", "digest", "delete", "revert", "skiplock", "force", "background_delay", "start",
    "storage", "unique", "archive", "pool", "bwlimit", "live-restore", "import-working-storage",
}

# qemu-server src/PVE/API2/Qemu.pm: which privilege each option needs ($cpuoptions, $memoryoptions ...)
CONFIG_PRIVS: dict[str, str] = {
    **dict.fromkeys(("cores", "cpu", "runningcpu", "cpulimit", "cpuunits", "numa", "smp", "sockets", "vcpus"),
                    "VM.Config.CPU"),
    **dict.fromkeys(("memory", "balloon", "shares", "allow-ksm"), "VM.Config.Memory"),
    **dict.fromkeys(("acpi", "hotplug", "kvm", "machine", "runningmachine", "scsihw", "smbios1", "tablet", "vga",
                     "watchdog", "audio0", "rng0"), "VM.Config.HWType"),
    **dict.fromkeys(("agent", "autostart", "bios", "description", "keyboard", "localtime", "migrate_downtime",
                     "migrate_speed", "name", "onboot", "ostype", "protection", "reboot", "startdate", "startup",
                     "tdf", "template"), "VM.Config.Options"),
    "freeze": "VM.PowerMgmt",
    **dict.fromkeys(("boot", "bootdisk", "vmstatestorage"), "VM.Config.Disk"),
}
CLOUDINIT_OPTIONS = {"cicustom", "cipassword", "citype", "ciuser", "ciupgrade", "nameserver", "searchdomain", "sshkeys"}


@dataclass
class Result:
    data: Any
    total: int | None = None


@dataclass
class VM:
    vmid: int
    config: dict[str, str] = field(default_factory=dict)
    node: str = "pve"  # where its config lives (nodes/NODE/qemu-server/VMID.conf)
    lock: str | None = None
    started: float | None = None

    @property
    def is_template(self) -> bool:
        return self.config.get("template") == "1"


Handler = Callable[[dict[str, Any], str], Any]


class PveApi:
    def __init__(
        self, *, nodes: list[NodeSpec], pve_version: str, schema: ApiSchema, storages: Storages, tasks: TaskManager,
        backend: VMBackend, faults: FaultInjector, lock: threading.RLock, access: Access, sdn: Sdn,
        certs: dict[str, NodeCert],
    ) -> None:
        self.nodes: dict[str, NodeSpec] = {n.name: n for n in nodes}
        self.node = nodes[0].name  # the first node: the one a client talks to by default
        self.pve_version = pve_version
        self._local = threading.local()  # the node handling the current request (see call)
        self.schema = schema
        self.storages = storages
        self.tasks = tasks
        self.backend = backend
        self.faults = faults
        self.lock = lock
        self.access = access
        self.sdn = sdn
        self.certs = certs  # node -> its TLS certificate (GET /nodes/{node}/certificates/info)
        self.vms: dict[int, VM] = {}
        self.create_props = schema.find("POST", "/nodes/{node}/qemu").properties
        self.routes: dict[tuple[str, str], Handler] = {}
        for handlers in (self, SdnApi(sdn, self)):
            for name in dir(handlers):
                fn = getattr(handlers, name)
                route = getattr(fn, "route", None)
                if route:
                    self.routes[route] = fn

    # --- helpers ------------------------------------------------------------------------------
    @property
    def current_node(self) -> str:
        """The node handling this request: the one named in the path (after proxying), else the receiver."""
        return str(getattr(self._local, "node", None) or self.node)

    def route_to(self, info: dict[str, Any], params: dict[str, Any], via: str) -> str:
        """The node that handles a request *via* received (see cluster.py): raises what PVE answers when a
        request must be proxied to a node that is unknown or offline."""
        node = params.get("node")
        if node is None:
            return via
        self._check_node(node)
        if node == via or info.get("proxyto") != "node":
            return str(node)
        if not self.nodes[node].online:
            # pve-http-server proxy_request (AnyEvent::HTTP): a connection that cannot be made is status 595
            raise ApiError(595, "No route to host")
        return str(node)

    def call(self, method: str, template: str, params: dict[str, Any], user: str, *, node: str | None = None) -> Result:
        handler = self.routes.get((method, template))
        if handler is None:
            raise ApiError(501, f"Method '{method} {template}' not implemented")
        if "node" in params:
            self._check_node(params["node"])
        with self.lock:
            self._local.node = node or params.get("node") or self.node
            try:
                out = handler(params, user)
            finally:
                self._local.node = None
        return out if isinstance(out, Result) else Result(out)

    def _check_node(self, node: str) -> None:
        if node not in self.nodes:
            raise die(f"hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known")

    def _vm(self, vmid: Any) -> VM:
        vm = self.vms.get(int(vmid))
        if vm is None or vm.node != self.current_node:
            # qemu-server: PVE::QemuConfig->load_config reads nodes/<this node>/qemu-server/<vmid>.conf
            raise die(f"Configuration file 'nodes/{self.current_node}/qemu-server/{int(vmid)}.conf' does not exist")
        return vm

    @staticmethod
    def _check_lock(vm: VM, params: dict[str, Any] | None = None) -> None:
        if vm.lock and not (params and params.get("skiplock") == "1"):
            raise die(f"VM is locked ({vm.lock})")

    def _storage(self, storage_id: str) -> StorageDef:
        sdef = self.storages.get(storage_id)
        if sdef is None:
            raise die(f"storage '{storage_id}' does not exist")
        if not self.storages.enabled_on(sdef, self.current_node):
            # pve-storage src/PVE/Storage.pm storage_check_node
            raise die(f"storage '{storage_id}' is not available on node '{self.current_node}'")
        return sdef

    def _running(self, vmid: int) -> bool:
        vm = self.vms.get(vmid)
        running = self.backend.is_running(vmid)
        if vm is not None and not running:
            vm.started = None
        return running

    def _task(
        self, kind: str, id: str, user: str, body: Callable[[Task], None], vmid: int | None = None,
        on_error: Callable[[Task, str], None] | None = None,
    ) -> str:
        rule = self.faults.take_task_fault(kind, vmid)
        behaviour = TaskBehaviour()
        if rule is not None and rule.kind == "hang_task":
            behaviour.hang = True
        elif rule is not None:
            behaviour.fail = rule.message
            behaviour.log = rule.log
        node = self.current_node

        def bound(task: Task) -> None:  # the worker runs "on" the node that started it
            self._local.node = node
            body(task)

        def bound_error(task: Task, error: str) -> None:
            self._local.node = node
            if on_error is not None:
                on_error(task, error)

        return self.tasks.start(kind, id, user, bound, behaviour, bound_error, node=node).upid

    def _drive_format(self, key: str) -> dict[str, Any]:
        return self.create_props[key]["format"]

    def _parse(self, key: str, value: str) -> dict[str, Any]:
        fmt = self.create_props[key]["format"]
        try:
            return parse_property_string(fmt, value, key)
        except FormatError as exc:  # the schema already accepted it; keep the message anyway
            raise ParamError({key: "invalid format - " + exc.stringify()}) from None

    def _volume(self, volid: str, node: str | None = None) -> Volume | None:
        return self.storages.volume(node or self.current_node, volid)

    @staticmethod
    def digest(config: dict[str, str]) -> str:
        text = "".join(f"{k}: {v}\n" for k, v in sorted(config.items()))
        return hashlib.sha1(text.encode()).hexdigest()

    def typed_config(self, config: dict[str, str]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in config.items():
            typ = (self.create_props.get(key) or {}).get("type")
            if typ in ("integer", "boolean") and re.fullmatch(r"[+-]?\d+", value):
                out[key] = int(value)
            elif typ == "number" and re.fullmatch(r"[+-]?\d+(\.\d+)?", value):
                out[key] = float(value) if "." in value else int(value)
            else:
                out[key] = value
        return out

    def disk_files(self, vm: VM) -> list[DiskFile]:
        """The VM's drives as files (on the VM's node)."""
        files: list[DiskFile] = []
        for key in sorted(vm.config):
            if not DRIVE_RE.match(key):
                continue
            drive = self._parse(key, vm.config[key])
            cdrom = drive.get("media") == "cdrom"
            volid = drive.get("file", "")
            if volid in ("none", "cdrom"):
                files.append(DiskFile(key, None, "raw", "cdrom"))
                continue
            vol = self._volume(volid, vm.node)
            if vol is None:
                raise TaskFailed(f"volume '{volid}' does not exist")
            fmt = "raw" if cdrom else vol.disk_format
            files.append(DiskFile(key, vol.path, fmt, "cdrom" if cdrom else "disk", drive.get("cache", "none")))
        return files

    # --- node, cluster, version -----------------------------------------------------------------
    @staticmethod
    def route(method: str, template: str) -> Callable[[Handler], Handler]:
        def mark(fn: Handler) -> Handler:
            fn.route = (method, template)  # type: ignore[attr-defined]
            return fn

        return mark

    @route("GET", "/version")
    def version(self, p: dict[str, Any], user: str) -> Any:
        return self._version_of(self.nodes[self.current_node].version or self.pve_version)

    @staticmethod
    def _version_of(version: str) -> dict[str, Any]:
        # pve-manager PVE/API2/Version.pm: version (pve-manager's), release (major.minor), repoid
        release = ".".join(version.split(".")[:2])
        repoid = hashlib.sha1(version.encode()).hexdigest()[:16]
        return {"release": release, "repoid": repoid, "version": version}

    def has_route(self, method: str, template: str) -> bool:
        return (method, template) in self.routes

    # --- nodes and the cluster ------------------------------------------------------------------
    def node_mem(self, node: str) -> int:
        """What the node's RRD reports as used memory: the host's own plus every running VM's."""
        spec = self.nodes[node]
        return spec.mem + sum(self._maxmem(vm) for vm in self.vms.values()
                              if vm.node == node and self.backend.is_running(vm.vmid))

    def node_cpu(self, node: str) -> float:
        """The node's CPU load: its own, plus (a simulation assumption, not PVE's) half the vCPUs of each
        running VM kept busy."""
        spec = self.nodes[node]
        busy = sum(int(vm.config.get("cores", "1")) * int(vm.config.get("sockets", "1")) for vm in self.vms.values()
                   if vm.node == node and self.backend.is_running(vm.vmid))
        return min(1.0, spec.cpu + 0.5 * busy / spec.maxcpu)

    def _node_stats(self, node: str, user: str) -> dict[str, Any]:
        # pve-manager PVE/API2Tools.pm extract_node_stats: status from the cluster membership; the
        # figures only with Sys.Audit on /nodes/<node> (PVE/API2/Nodes.pm index, Cluster.pm resources)
        spec = self.nodes[node]
        entry: dict[str, Any] = {"id": f"node/{node}", "node": node, "type": "node",
                                 "status": "online" if spec.online else "offline", "level": ""}
        if self.access.has(user, f"/nodes/{node}", ["Sys.Audit"]):
            entry.update({"maxcpu": spec.maxcpu, "maxmem": spec.maxmem, "maxdisk": 100 << 30})
            if spec.online:
                entry.update({"cpu": round(self.node_cpu(node), 4), "mem": self.node_mem(node), "disk": 10 << 30,
                              "uptime": 3600})
        return entry

    @route("GET", "/nodes")
    def nodes_index(self, p: dict[str, Any], user: str) -> Any:
        return [self._node_stats(n, user) for n in sorted(self.nodes)]

    @route("GET", "/nodes/{node}/version")
    def node_version(self, p: dict[str, Any], user: str) -> Any:
        return self._version_of(self.nodes[self.current_node].version or self.pve_version)

    @route("GET", "/cluster/status")
    def cluster_status(self, p: dict[str, Any], user: str) -> Any:
        # pve-manager PVE/API2/Cluster.pm get_status (Sys.Audit on /): the cluster, then each member with its ip
        out: list[dict[str, Any]] = []
        if len(self.nodes) > 1:
            out.append({"type": "cluster", "id": "cluster", "name": "pvesim", "nodes": len(self.nodes),
                        "quorate": 1, "version": len(self.nodes)})
        for i, name in enumerate(self.nodes):
            out.append({"type": "node", "id": f"node/{name}", "name": name, "ip": loopback_address(i),
                        "nodeid": i + 1, "online": int(self.nodes[name].online),
                        "local": int(name == self.current_node), "level": ""})
        return out

    @route("GET", "/nodes/{node}/certificates/info")
    def certificates_info(self, p: dict[str, Any], user: str) -> Any:
        # pve-manager PVE/API2/Certificates.pm info (user => 'all'): the node's certificates, pve-ssl.pem
        # being the one pveproxy serves when no custom certificate is installed
        cert = self.certs[self.current_node]
        return [{"filename": "pve-ssl.pem", "fingerprint": cert.fingerprint,
                 "subject": f"/OU=PVE Cluster Node/O=Proxmox Virtual Environment/CN={self.current_node}.pvesim.invalid",
                 "issuer": "/CN=Proxmox Virtual Environment (pvesim)/O=PVE Cluster Manager CA",
                 "san": [self.current_node, "localhost", loopback_address(list(self.nodes).index(self.current_node))],
                 "public-key-type": "id-ecPublicKey", "public-key-bits": 256,
                 "pem": cert.cert_file.read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"}]

    @route("GET", "/nodes/{node}/network")
    def network_index(self, p: dict[str, Any], user: str) -> Any:
        # pve-manager PVE/API2/Network.pm index: the node's /etc/network/interfaces; with type any_bridge
        # (or vnet/include_sdn) also the node's applied SDN vnets; bridges are listed only to whom may
        # audit or use them (check_sdn_bridge on /sdn/zones/localnetwork/<bridge>)
        spec = self.nodes[self.current_node]
        kind = p.get("type")
        out: list[dict[str, Any]] = []
        for i, iface in enumerate(spec.interfaces):
            is_bridge = iface.type in ("bridge", "OVSBridge")
            if kind and kind != "include_sdn" and not (kind == iface.type or (is_bridge and kind in ("any_bridge",
                                                                                                    "any_local_bridge"))):
                continue
            if is_bridge and not self.access.has(user, f"/sdn/zones/localnetwork/{iface.iface}",
                                                 ["SDN.Audit", "SDN.Use"], any_of=True):
                continue
            out.append(iface.listing(i + 3))
        if kind in ("any_bridge", "include_sdn", "vnet"):
            out.extend(self.sdn.local_vnets(self.current_node, user))
        return sorted(out, key=lambda e: e["iface"])

    def bridge_exists(self, node: str, bridge: str) -> bool:
        spec = self.nodes[node]
        return any(i.iface == bridge and i.type in ("bridge", "OVSBridge") for i in spec.interfaces) \
            or self.sdn.vnet_applied(bridge, node)

    @route("GET", "/cluster/resources")
    def cluster_resources(self, p: dict[str, Any], user: str) -> Any:
        # pve-manager PVE/API2/Cluster.pm resources: VMs need VM.Audit, storages Datastore.Audit (one
        # entry per node where the storage is enabled), node figures Sys.Audit (see _node_stats)
        out: list[dict[str, Any]] = []
        kind = p.get("type")
        if kind in (None, "vm"):
            for vm in sorted(self.vms.values(), key=lambda v: v.vmid):
                if self.access.has(user, f"/vms/{vm.vmid}", ["VM.Audit"]):
                    out.append({"id": f"qemu/{vm.vmid}", "type": "qemu", **self._vm_summary(vm)})
        if kind in (None, "node"):
            out.extend(self._node_stats(n, user) for n in sorted(self.nodes))
        if kind in (None, "storage"):
            for sdef in self.storages.defs.values():
                if not self.access.has(user, f"/storage/{sdef.id}", ["Datastore.Audit"]):
                    continue
                for node in sorted(self.nodes):
                    if not self.storages.enabled_on(sdef, node):
                        continue
                    entry = {"id": f"storage/{node}/{sdef.id}", "type": "storage", "storage": sdef.id,
                             "node": node, "status": "unknown", "plugintype": sdef.type,
                             "content": ",".join(sorted(sdef.content)), "shared": int(sdef.shared)}
                    if self.nodes[node].online:
                        entry.update({"status": "available", "maxdisk": sdef.total,
                                      "disk": self.storages.used(sdef, node)})
                    out.append(entry)
        if kind in (None, "sdn"):
            out.extend(self.sdn.resources(sorted(n for n, spec in self.nodes.items() if spec.online), user))
        return out

    @route("GET", "/cluster/nextid")
    def nextid(self, p: dict[str, Any], user: str) -> Any:
        if p.get("vmid") is not None:
            vmid = int(p["vmid"])
            if vmid in self.vms:
                raise ParamError({"vmid": f"VM {vmid} already exists"}, probe=True)
            return perl_str(p["vmid"])
        vmid = 100
        while vmid in self.vms:
            vmid += 1
        return str(vmid)

    @route("GET", "/access/permissions")
    def access_permissions(self, p: dict[str, Any], user: str) -> Any:
        # pve-access-control src/PVE/API2/AccessControl.pm permissions: one's own (or one's tokens'), else
        # Sys.Audit on /access; with a path, that path's privileges (even when empty), else every path
        userid = p.get("userid") or user
        if not (userid == user or userid.split("!", 1)[0] == user):
            self.access.check(user, "/access", ["Sys.Audit"])
        if p.get("path"):
            return {p["path"]: {k: int(v) for k, v in sorted(self.access.permissions(userid, p["path"]).items())}}
        return self.access.effective(userid)

    @route("POST", "/access/ticket")
    def ticket(self, p: dict[str, Any], user: str) -> Any:
        raise ApiError(401, "authentication failure")

    # --- storage ------------------------------------------------------------------------------
    def _storage_status(self, sdef: StorageDef) -> dict[str, Any]:
        used = self.storages.used(sdef, self.current_node)
        return {"storage": sdef.id, "type": sdef.type, "content": ",".join(sorted(sdef.content)), "active": 1,
                "enabled": 1, "shared": int(sdef.shared), "total": sdef.total, "used": used,
                "avail": sdef.total - used, "used_fraction": used / sdef.total}

    @route("GET", "/nodes/{node}/storage")
    def storage_index(self, p: dict[str, Any], user: str) -> Any:
        # pve-storage src/PVE/API2/Storage/Status.pm index: storages enabled on this node (storage_info),
        # "No such storage." for a named one that is not, then only those the user may audit or allocate on
        node = self.current_node
        enabled = [d for d in self.storages.defs.values() if self.storages.enabled_on(d, node)]
        wanted = set(formats.split_list(p.get("content", "")))
        if wanted:
            enabled = [d for d in enabled if wanted & set(d.content)]
        if p.get("storage") and p["storage"] not in {d.id for d in enabled}:
            raise ParamError({"storage": "No such storage."})
        out = []
        for sdef in enabled:
            if not self.access.has(user, f"/storage/{sdef.id}", ["Datastore.Audit", "Datastore.AllocateSpace"],
                                   any_of=True):
                continue
            if p.get("storage") and p["storage"] != sdef.id:
                continue
            out.append(self._storage_status(sdef))
        return out

    @route("GET", "/nodes/{node}/storage/{storage}/status")
    def storage_status(self, p: dict[str, Any], user: str) -> Any:
        sdef = self.storages.get(p["storage"])
        if sdef is None or not self.storages.enabled_on(sdef, self.current_node):
            raise ParamError({"storage": "No such storage."})
        out = self._storage_status(sdef)
        del out["storage"], out["used_fraction"]
        return out

    def _content_entry(self, vol: Volume) -> dict[str, Any]:
        # pve-storage src/PVE/Storage/Plugin.pm: list_volumes lists images through list_images (file_size_info:
        # the virtual size), and every other content type (iso, vztmpl, backup, snippets, import) through
        # $get_subdir_files with `$info->{size} = $st->size`: the file's size on disk, also for a qcow2 in import.
        size = vol.size if vol.content in ("images", "rootdir") else vol.path.stat().st_size
        entry: dict[str, Any] = {"volid": vol.volid, "format": vol.format, "size": size, "ctime": vol.ctime,
                                 "content": vol.content}
        if vol.vmid is not None:
            entry["vmid"] = vol.vmid
        if vol.disk_format == "qcow2" and vol.content == "images":
            entry["used"] = vol.path.stat().st_size if vol.path.exists() else 0
        return entry

    @route("GET", "/nodes/{node}/storage/{storage}/content")
    def content_list(self, p: dict[str, Any], user: str) -> Any:
        sdef = self._storage(p["storage"])
        out = []
        for vol in sorted(self.storages.visible(self.current_node), key=lambda v: v.volid):
            if vol.storage != sdef.id:
                continue
            if p.get("content") and vol.content != p["content"]:
                continue
            if p.get("vmid") is not None and vol.vmid != int(p["vmid"]):
                continue
            out.append(self._content_entry(vol))
        return out

    def _real_volid(self, storage: str, volume: str) -> str:
        self._storage(storage)
        if ":" in volume:
            sid = parse_volume_id(volume)
            if sid is None:
                raise die(f"unable to parse volume ID '{volume}'")
            if sid[0] != storage:
                raise ParamError({"volume": "storage ID mismatch"})
            return volume
        return f"{storage}:{volume}"

    @route("GET", "/nodes/{node}/storage/{storage}/content/{volume}")
    def content_get(self, p: dict[str, Any], user: str) -> Any:
        volid = self._real_volid(p["storage"], p["volume"])
        vol = self._volume(volid)
        if vol is None:
            raise die(f"volume '{volid}' does not exist")
        self.check_volume_access(user, volid, vol)
        # pve-storage src/PVE/API2/Storage/Content.pm 'info': volume_size_info -> file_size_info with the
        # volume's format, so a qcow2 (images or import) shows its virtual size here, unlike in the listing.
        return {"path": str(vol.path), "size": vol.size, "used": vol.path.stat().st_size, "format": vol.format}

    @route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
    def content_delete(self, p: dict[str, Any], user: str) -> Any:
        volid = self._real_volid(p["storage"], p["volume"])
        vol = self._volume(volid)
        ownervm = vol.vmid if vol else None
        # pve-storage src/PVE/API2/Storage/Content.pm delete: Datastore.Allocate on the storage (backups aside)
        self.access.check(user, f"/storage/{p['storage']}", ["Datastore.Allocate"])
        if (vol is not None and vol.content == "images" and ownervm in self.vms
                and any(volid in v for v in self.vms[ownervm].config.values())):
            raise die(f"unable to delete '{volid}' - volume is still in use (VM {ownervm})")

        def work(task: Task) -> None:
            with self.lock:
                current = self._volume(volid)
                if current is None or not self.storages.free(current):
                    task.warn(f"disk image '{volid}' does not exist")
                    return
            task.log(f"Removed volume '{volid}'")

        ident = (f"{ownervm}@" if ownervm else "") + p["storage"]
        upid = self._task("imgdel", ident, user, work)
        delay = int(p.get("delay") or 0)
        if delay:
            task = self.tasks.get(upid)
            assert task
            self.lock.release()
            try:
                finished = task.done.wait(delay)
            finally:
                self.lock.acquire()
            if finished:
                if task.exitstatus == "OK" or (task.exitstatus or "").startswith("WARNINGS"):
                    return None
                raise die(task.exitstatus or "unknown error")
        return upid

    def check_volume_access(self, user: str, volid: str, vol: Volume | None, vmid: int | None = None) -> None:
        """pve-storage src/PVE/Storage.pm check_volume_access."""
        storage = volid.split(":", 1)[0]
        if self.access.has(user, f"/storage/{storage}", ["Datastore.Allocate"]):
            return
        content = vol.content if vol is not None else volid.split(":", 1)[1].split("/", 1)[0]
        if content in ("iso", "vztmpl", "import"):
            self.access.check(user, f"/storage/{storage}", ["Datastore.AllocateSpace", "Datastore.Audit"], any_of=True)
        elif vol is not None and vol.vmid is not None and vol.vmid == vmid:
            return
        elif vol is not None and vol.content in ("images", "rootdir") and vol.vmid is not None:
            self.access.check(user, f"/storage/{storage}", ["Datastore.Audit"])
            self.access.check(user, f"/vms/{vol.vmid}", ["VM.Config.Disk"])
        else:
            raise die(f"missing privileges to access {volid}")

    def upload(self, p: dict[str, Any], user: str, tmpfile: Path, via: str | None = None) -> str:
        """``POST .../upload`` after the body is on disk (server.py streams it into *tmpfile*).

        pve-storage src/PVE/API2/Storage/Status.pm upload has no ``proxyto``: the node that received the
        body runs it, and for another node's storage it copies the file there with scp (after activating
        the storage over ssh, which fails for a node that is down)."""
        with self.lock:
            self._check_node(p["node"])
            self._local.node = p["node"]
            try:
                return self._upload(p, user, tmpfile, via or p["node"])
            finally:
                self._local.node = None

    def _upload(self, p: dict[str, Any], user: str, tmpfile: Path, via: str) -> str:
        node = self.current_node
        sdef = self._storage(p["storage"])
        remote = node != via
        if remote and not self.nodes[node].online:
            address = loopback_address(list(self.nodes).index(node))
            raise die(f"can't activate storage '{sdef.id}' on node '{node}': command '/usr/bin/ssh -e none -o "
                      f"BatchMode=yes -o HostKeyAlias={node} root@{address} -- /usr/sbin/pvesm status --storage "
                      f"{sdef.id}' failed: exit code 255")
        if not sdef.has_path:
            raise die(f"can't upload to storage type '{sdef.type}'")
        content = p["content"]
        name = normalize_content_filename(p["filename"])
        if content == "iso":
            if not re.search(r"[^/]+\.(?:iso|img)$", name, re.I):
                raise ParamError({"filename": "wrong file extension"})
        elif content == "vztmpl":
            if not re.search(r"[^/]+\.tar\.(gz|xz|zst|bz2)$", name, re.I):
                raise ParamError({"filename": "wrong file extension"})
        elif content == "import" and not re.search(r"^[a-zA-Z0-9\-\.\+\=\_]+\.(ova|qcow2|raw|vmdk)$", name):
            raise ParamError({"filename": "invalid filename or wrong extension"})
        if content not in sdef.content:
            raise die(f"storage '{sdef.id}' does not support '{content}' content")
        dest = self.storages.content_dir(sdef, node, content) / name
        size = tmpfile.stat().st_size

        def work(task: Task) -> None:
            task.log(f"starting file import from: {tmpfile}")
            try:
                algo = p.get("checksum-algorithm")
                if algo:
                    got = hash_file(algo, tmpfile)
                    if got.lower() == str(p["checksum"]).lower():
                        task.log("calculating checksum...OK, checksum verified")
                    else:
                        task.log("calculating checksum...")
                        raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{p['checksum']}'")
                if content == "import" and not name.endswith(".ova"):
                    from tests.pvesim.storage import image_info

                    try:
                        image_info(tmpfile, name.rsplit(".", 1)[-1])
                    except ValueError as exc:
                        raise TaskFailed(str(exc)) from None
            except TaskFailed:
                tmpfile.unlink(missing_ok=True)
                raise
            task.log(f"target node: {node}")
            task.log(f"target file: {dest}")
            task.log(f"file size is: {size}")
            if remote:
                address = loopback_address(list(self.nodes).index(node))
                task.log(f"command: /usr/bin/scp -o BatchMode=yes -p -- {tmpfile} [{address}]:{dest}")
            else:
                task.log(f"command: cp -- {tmpfile} {dest}")
            dest.parent.mkdir(parents=True, exist_ok=True)
            tmpfile.replace(dest)  # same file system: the "copy" is a rename
            with self.lock:
                self.storages.add_file(sdef, node, content, name, dest)
            task.log("finished file import successfully")

        self._local.node = via  # the worker runs where the body arrived (UPID:<that node>:...)
        return self._task("imgcopy", "", user, work, on_error=lambda t, e: tmpfile.unlink(missing_ok=True))

    @route("POST", "/nodes/{node}/storage/{storage}/upload")
    def upload_without_file(self, p: dict[str, Any], user: str) -> Any:
        # reached only when the request was not multipart (server.py handles real uploads)
        raise die("missing temporary file name")

    @route("POST", "/nodes/{node}/storage/{storage}/download-url")
    def download_url(self, p: dict[str, Any], user: str) -> Any:
        sdef = self._storage(p["storage"])
        content = p["content"]
        if content not in ("iso", "vztmpl", "import"):
            raise ParamError({"content": f"upload content-type '{content}' is not allowed"})
        if content not in sdef.content:
            raise die(f"storage '{sdef.id}' is not configured for content-type '{content}'")
        name = normalize_content_filename(p["filename"])
        node = self.current_node
        dest = self.storages.content_dir(sdef, node, content) / name
        url = p["url"]

        def work(task: Task) -> None:
            import urllib.parse

            import requests

            host = urllib.parse.urlsplit(url).hostname or ""
            if host not in ("127.0.0.1", "localhost", "::1"):
                raise TaskFailed(f"pvesim only downloads from loopback, not from '{host}'")
            task.log(f"downloading {url} to {dest}")
            tmp = dest.with_name(f".{name}.tmp")
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                with requests.get(url, stream=True, timeout=30, verify=p.get("verify-certificates", "1") == "1") as r:
                    if r.status_code != 200:
                        raise TaskFailed(f"download failed: {r.status_code} {r.reason}")
                    with open(tmp, "wb") as fh:
                        for chunk in r.iter_content(1 << 20):
                            fh.write(chunk)
                algo = p.get("checksum-algorithm")
                if algo:
                    got = hash_file(algo, tmp)
                    if got.lower() != str(p["checksum"]).lower():
                        raise TaskFailed(f"checksum mismatch: got '{got}' != expect '{p['checksum']}'")
                    task.log("calculating checksum...OK, checksum verified")
                tmp.replace(dest)
            except requests.RequestException as exc:
                raise TaskFailed(f"download failed: {exc}") from None
            finally:
                tmp.unlink(missing_ok=True)
            with self.lock:
                self.storages.add_file(sdef, node, content, name, dest)
            task.log(f"download of '{url}' to '{dest}' finished")

        return self._task("download", sdef.id, user, work)

    # --- tasks --------------------------------------------------------------------------------
    def _get_task(self, upid: str, user: str, priv: str = "Sys.Audit") -> Task:
        # pve-manager PVE/API2/Tasks.pm: the UPID is decoded ("unable to parse worker upid"), its log file
        # must exist on this node ("no such task": a task of another node is not there), and a user who
        # does not own the task needs Sys.Audit (Sys.Modify to stop it) on /nodes/<node>
        task = self.tasks.get(upid)
        if task is None or task.node != self.current_node:
            if not re.match(r"^UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:]+:[^:]*:[^:]+:$", upid):
                raise ParamError({"upid": "unable to parse worker upid"})
            raise ParamError({"upid": "no such task"})
        owner, _, tokenid = task.user.partition("!")
        if not (user == task.user or (tokenid and user == owner)):
            self.access.check(user, f"/nodes/{self.current_node}", [priv])
        return task

    @route("GET", "/nodes/{node}/tasks/{upid}/status")
    def task_status(self, p: dict[str, Any], user: str) -> Any:
        return self._get_task(p["upid"], user).status_dict()

    @route("GET", "/nodes/{node}/tasks/{upid}/log")
    def task_log(self, p: dict[str, Any], user: str) -> Any:
        task = self._get_task(p["upid"], user)
        start = int(p.get("start") or 0)
        limit = int(p.get("limit") or 50)
        lines = task.lines if task.lines else [(0.0, "no content")]
        sel = lines[start:] if limit == 0 else lines[start : start + limit]
        return Result([{"n": start + i + 1, "t": text} for i, (_, text) in enumerate(sel)], total=len(lines))

    @route("GET", "/nodes/{node}/tasks")
    def task_list(self, p: dict[str, Any], user: str) -> Any:
        out = []
        auditor = self.access.has(user, f"/nodes/{self.current_node}", ["Sys.Audit"])
        for task in sorted(self.tasks.tasks.values(), key=lambda t: -t.starttime):
            if task.node != self.current_node or not (auditor or task.user == user):
                continue
            if p.get("vmid") is not None and task.id != perl_str(p["vmid"]):
                continue
            if p.get("typefilter") and task.type != p["typefilter"]:
                continue
            if p.get("source") == "active" and task.status != "running":
                continue
            entry = {k: v for k, v in task.status_dict().items() if k not in ("exitstatus", "status")}
            if task.status == "stopped":
                entry["status"] = task.exitstatus
                entry["endtime"] = task.endtime
            out.append(entry)
        limit = int(p.get("limit") or 50)
        return Result(out[:limit], total=len(out))

    @route("DELETE", "/nodes/{node}/tasks/{upid}")
    def task_stop(self, p: dict[str, Any], user: str) -> Any:
        task = self._get_task(p["upid"], user, "Sys.Modify")
        task.stop_requested.set()
        return None

    # --- VMs: listing and status ---------------------------------------------------------------
    def _maxmem(self, vm: VM) -> int:
        mem = vm.config.get("memory", "512")
        m = re.search(r"(?:^|current=)(\d+)", mem)
        return int(m.group(1) if m else 512) << 20

    def _vm_summary(self, vm: VM) -> dict[str, Any]:
        running = self._running(vm.vmid)
        out: dict[str, Any] = {
            "vmid": vm.vmid, "name": vm.config.get("name", f"VM {vm.vmid}"), "node": vm.node,
            "status": "running" if running else "stopped", "maxmem": self._maxmem(vm),
            "cpus": int(vm.config.get("cores", "1")) * int(vm.config.get("sockets", "1")),
            "maxdisk": sum(v.size for v in self._vm_volumes(vm)), "uptime": int(time.monotonic() - vm.started)
            if running and vm.started else 0, "template": 1 if vm.is_template else 0,
        }
        if vm.config.get("tags"):
            out["tags"] = vm.config["tags"]
        if vm.lock:
            out["lock"] = vm.lock
        if running and (pid := self.backend.pid(vm.vmid)):
            out["pid"] = pid
        return out

    def _vm_volumes(self, vm: VM) -> list[Volume]:
        vols = []
        for key, value in vm.config.items():
            if DRIVE_RE.match(key) or key.startswith("unused"):
                fmt_key = "unused0" if key.startswith("unused") else key
                drive = self._parse(fmt_key, value)
                if drive.get("media") == "cdrom":
                    continue
                vol = self._volume(drive.get("file", ""), vm.node)
                if vol is not None:
                    vols.append(vol)
        return vols

    @route("GET", "/nodes/{node}/qemu")
    def vm_list(self, p: dict[str, Any], user: str) -> Any:
        # qemu-server vmlist: the VMs of this node the user has VM.Audit on
        return [self._vm_summary(vm) for vm in sorted(self.vms.values(), key=lambda v: v.vmid)
                if vm.node == self.current_node and self.access.has(user, f"/vms/{vm.vmid}", ["VM.Audit"])]

    @route("GET", "/nodes/{node}/qemu/{vmid}/status/current")
    def vm_status(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        out = self._vm_summary(vm)
        out["qmpstatus"] = out["status"]
        out["ha"] = {"managed": 0}
        agent = vm.config.get("agent")
        if agent and self._agent_enabled(agent):
            out["agent"] = 1
        return out

    @route("GET", "/nodes/{node}/qemu/{vmid}/config")
    def config_get(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        if p.get("snapshot"):
            raise die(f"snapshot '{p['snapshot']}' does not exist")
        out = self.typed_config(vm.config)
        if "cipassword" in out:
            out["cipassword"] = "**********"
        out["digest"] = self.digest(vm.config)
        if vm.lock:
            out["lock"] = vm.lock
        return out

    # --- VMs: create and configure -----------------------------------------------------------------
    def _random_mac(self) -> str:
        return "BC:24:11:" + ":".join(f"{random.randrange(256):02X}" for _ in range(3))

    def _normalize_net(self, key: str, value: str) -> str:
        net = self._parse(key, value)
        if not net.get("macaddr"):
            net["macaddr"] = self._random_mac()
        return print_property_string(net, self._drive_format(key))

    def _prepare_drive(self, key: str, value: str, vmid: int) -> dict[str, Any]:
        """Check a drive string synchronously (like PVE's parameter checks) and return it parsed."""
        drive = self._parse(key, value)
        volid = drive["file"]
        cdrom = drive.get("media") == "cdrom" or volid in ("cdrom", "none")
        m = NEW_DISK_RE.match(volid)
        if drive.get("import-from"):
            if not m or cdrom:
                raise ParamError({key: "import-from requires special syntax - use <storage ID>:0,import-from=<source>"})
            source = drive["import-from"]
            if source.startswith("/"):
                raise ApiError(403, "Permission check failed (only root can pass arbitrary filesystem paths)")
            src = self._volume(source)
            if src is None:
                raise die(f"volume '{source}' does not exist")
            if src.content not in ("images", "import") or src.format == "ova":
                raise die(f"{key}: '{source}' has wrong type '{src.content}' - needs to be 'images' or 'import'")
        if m and not cdrom:
            storage = m.group(2)
            if not storage:
                raise ParamError({key: "missing storage"})
            sdef = self._storage(storage)
            if "images" not in sdef.content:
                raise die(f"storage '{storage}' does not support vm images")
        elif not cdrom and volid.startswith("/"):
            raise ApiError(403, "Permission check failed (only root can pass arbitrary filesystem paths)")
        elif not cdrom:
            sid = parse_volume_id(volid)
            if sid is None:
                raise die(f"unable to parse volume ID '{volid}'")
            self._storage(sid[0])
        elif volid not in ("cdrom", "none"):
            sid = parse_volume_id(volid)
            if sid is None:
                raise die(f"unable to parse volume ID '{volid}'")
            self._storage(sid[0])
            if not re.match(r"^iso/[^/]+$", sid[1]):
                raise die(f"unable to use volume {volid} - content type needs to be 'iso'")
        return drive

    def _realize_drive(self, key: str, drive: dict[str, Any], vmid: int, task: Task | None) -> str:
        """Allocate or import the disk a drive string asks for; return the drive string to store."""
        volid = drive["file"]
        cdrom = drive.get("media") == "cdrom" or volid in ("cdrom", "none")
        m = NEW_DISK_RE.match(volid)
        fmt = self._drive_format(key)
        if cdrom:
            if volid == "cdrom":
                drive["file"] = "cdrom"
            elif volid != "none":
                vol = self._volume(volid)
                if vol is None:
                    raise TaskFailed(f"volume '{volid}' does not exist")
                drive["size"] = vol.size
            drive["media"] = "cdrom"
            return print_property_string(drive, fmt)
        if m:
            sdef = self._storage(m.group(2))
            source = drive.pop("import-from", None)
            if source:
                src = self._volume(source)
                if src is None:
                    raise TaskFailed(f"volume '{source}' does not exist")
                if task:
                    task.log(f"importing disk '{source}' to VM {vmid} ...")
                vol = self.storages.alloc_copy(sdef, self.current_node, vmid, src)
                if task:
                    task.log(f"  Logical volume \"{Path(vol.volname).name}\" created.")
                    task.log(f"transferred {format_size(src.size)} of {format_size(src.size)} (100.00%)")
                    task.log(f"Successfully imported disk as '{key}:{vol.volid}'")
            else:
                size = int(float(m.group(3)) * (1 << 30))
                if size <= 0:
                    raise TaskFailed("unable to create image: size must be greater than zero")
                vol = self.storages.alloc_blank(sdef, self.current_node, vmid, size)
                if task:
                    task.log(f"  Logical volume \"{Path(vol.volname).name}\" created.")
            drive["file"] = vol.volid
            drive["size"] = vol.size
            drive.pop("format", None) if sdef.type == "lvmthin" else None
            return print_property_string(drive, fmt)
        vol = self._volume(volid)
        if vol is None:
            raise TaskFailed(f"volume '{volid}' does not exist")
        drive["size"] = vol.size
        return print_property_string(drive, fmt)

    def _free_drive_value(self, key: str, value: str) -> None:
        drive = self._parse("unused0" if key.startswith("unused") else key, value)
        if drive.get("media") == "cdrom":
            return
        vol = self._volume(drive.get("file", ""))
        if vol is None:
            return
        if vol.volid.split(":", 1)[1].startswith("base-") and self.storages.clones_of(vol):
            raise TaskFailed(f"base volume '{vol.volname}' is still in use by linked cloned")
        self.storages.free(vol)

    def _next_unused(self, config: dict[str, str]) -> str:
        for i in range(256):
            if f"unused{i}" not in config:
                return f"unused{i}"
        raise TaskFailed("too many unused volumes")

    def check_modify_config_perm(self, user: str, vmid: int, keys: list[str]) -> None:
        """qemu-server src/PVE/API2/Qemu.pm $check_vm_modify_config_perm."""
        path = f"/vms/{vmid}"
        for key in keys:
            if DRIVE_RE.match(key) or key == "cdrom" or key == "tags" or key in NOT_CONFIG:
                continue
            if re.match(r"^(unused|serial|usb|hostpci|virtiofs)\d+$", key):
                continue
            if re.match(r"^numa\d+$", key):
                self.access.check(user, path, ["VM.Config.CPU"])
            elif key in CONFIG_PRIVS:
                self.access.check(user, path, [CONFIG_PRIVS[key]])
                if key == "startup":
                    self.access.check(user, "/", ["Sys.Modify"])
            elif re.match(r"^net\d+$", key):
                self.access.check(user, path, ["VM.Config.Network"])
            elif key in CLOUDINIT_OPTIONS or re.match(r"^ipconfig\d+$", key):
                self.access.check(user, path, ["VM.Config.Cloudinit", "VM.Config.Network"], any_of=True)
            else:
                raise die(f"only root can set '{key}' config")

    def check_storage_access(self, user: str, vmid: int, drives: dict[str, Any]) -> None:
        """qemu-server src/PVE/API2/Qemu.pm $check_storage_access: new disks need Datastore.AllocateSpace on
        their storage; existing volumes and import sources pve-storage's check_volume_access."""
        for drive in drives.values():
            volid = drive.get("file", "")
            cdrom = drive.get("media") == "cdrom"
            if volid in ("", "none", "cloudinit"):
                pass
            elif cdrom and volid == "cdrom":
                self.access.check(user, "/", ["Sys.Console"])
            elif not cdrom and (m := NEW_DISK_RE.match(volid)):
                self.access.check(user, f"/storage/{m.group(2)}", ["Datastore.AllocateSpace"])
            else:
                self.check_volume_access(user, volid, self._volume(volid), vmid)
            if drive.get("import-from"):
                source = drive["import-from"]
                self.check_volume_access(user, source, self._volume(source), vmid)

    def check_bridge_access(self, user: str, p: dict[str, Any]) -> None:
        """qemu-server check_bridge_access -> pve-guest-common src/PVE/GuestHelpers.pm check_vnet_access:
        SDN.Use on /sdn/zones/<zone>/<bridge> (zone 'localnetwork' for a plain Linux bridge), or on
        .../<bridge>/<tag> for a tagged NIC."""
        for key, value in p.items():
            if not re.match(r"^net\d+$", key):
                continue
            net = self._parse(key, perl_str(value))
            bridge = net.get("bridge")
            if not bridge:
                continue
            zone = self.sdn.zone_of(bridge) or "localnetwork"
            path = f"/sdn/zones/{zone}/{bridge}" + (f"/{net['tag']}" if net.get("tag") else "")
            self.access.check(user, path, ["SDN.Use"])

    def _check_serial_perm(self, user: str, vmid: int, p: dict[str, Any]) -> None:
        # qemu-server $check_vm_create_serial_perm: 8.4 wants VM.Config.HWType for a socket (and root for a
        # real device); 9.x checks nothing more here
        for key, value in p.items():
            if re.match(r"^serial\d+$", key) and self.schema.version == "8.4":
                if perl_str(value) != "socket":
                    raise die(f"only root can set '{key}' config for real devices")
                self.access.check(user, f"/vms/{vmid}", ["VM.Config.HWType"])

    def _check_config_params(self, vm_config: dict[str, str], p: dict[str, Any], vmid: int) -> dict[str, Any]:
        """Synchronous checks of a create/config request; returns the parsed drives."""
        if "cdrom" in p and "ide2" in p:
            raise ParamError({"cdrom": "conflicts with ide2"})
        drives: dict[str, Any] = {}
        for key, value in p.items():
            value = perl_str(value)
            if key == "cdrom":  # an alias of ide2 (format pve-qm-ide)
                key, value = "ide2", value if "media=" in value else f"{value},media=cdrom"
            if DRIVE_RE.match(key):
                drives[key] = self._prepare_drive(key, value, vmid)
        for key in formats.split_list(p.get("delete", "")):
            if key in p:
                raise ParamError({"delete": f"you can't use '-{key}' and -delete {key}' at the same time"})
        return drives

    def _apply_config(self, vm: VM, p: dict[str, Any], drives: dict[str, Any], task: Task | None) -> None:
        """Write a create/config request into *vm* (allocating disks); runs in the task (or sync for PUT)."""
        config = vm.config
        for key in formats.split_list(p.get("delete", "")):
            if key not in config:
                continue
            value = config.pop(key)
            if key.startswith("unused"):
                self._free_drive_value(key, value)
            elif DRIVE_RE.match(key) and self._parse(key, value).get("media") != "cdrom":
                config[self._next_unused(config)] = self._parse(key, value)["file"]
        for key, value in p.items():
            if key in NOT_CONFIG or key == "cdrom":
                continue
            value = perl_str(value)
            if DRIVE_RE.match(key):
                continue
            if re.match(r"^net\d+$", key):
                value = self._normalize_net(key, value)
            if key == "cipassword" and not value.startswith("$"):
                # PVE stores a crypt() hash, never the password (a salted SHA-256 stands in here)
                salt = uuid.uuid4().hex[:8]
                value = f"$5${salt}${hashlib.sha256((salt + value).encode()).hexdigest()}"
            config[key] = value
        for key, drive in drives.items():
            old = config.get(key)
            config[key] = self._realize_drive(key, dict(drive), vm.vmid, task)
            if old:
                old_drive = self._parse(key, old)
                if old_drive.get("media") != "cdrom" and old_drive["file"] != self._parse(key, config[key])["file"]:
                    config[self._next_unused(config)] = old_drive["file"]

    @route("POST", "/nodes/{node}/qemu")
    def vm_create(self, p: dict[str, Any], user: str) -> Any:
        vmid = int(p["vmid"])
        if p.get("archive"):
            raise die("pvesim: restore from backup archive is not simulated")
        # qemu-server src/PVE/API2/Qemu.pm create_vm: the checks come before the config is created
        if p.get("storage"):
            self.access.check(user, f"/storage/{p['storage']}", ["Datastore.AllocateSpace"])
        if p.get("start") == "1" and self.schema.version != "8.4":
            self.access.check(user, f"/vms/{vmid}", ["VM.PowerMgmt"])
        if not self.access.has(user, f"/vms/{vmid}", ["VM.Allocate"]):
            raise perm_error()
        drives = self._check_config_params({}, p, vmid)
        self.check_storage_access(user, vmid, drives)
        self.check_modify_config_perm(user, vmid, list(p))
        self._check_serial_perm(user, vmid, p)
        self.check_bridge_access(user, p)
        if vmid in self.vms:
            raise die(f"unable to create VM {vmid}: config file already exists")
        vm = VM(vmid, {}, lock="create", node=self.current_node)
        self.vms[vmid] = vm

        def work(task: Task) -> None:
            with self.lock:
                self._apply_config(vm, p, drives, task)
                vm.config.setdefault("smbios1", f"uuid={uuid.uuid4()}")
                vm.config.setdefault("vmgenid", str(uuid.uuid4()))
                vm.config.setdefault("meta", f"creation-qemu=9.2.0,ctime={int(time.time())}")
                vm.lock = None
            if p.get("start") == "1":
                self._do_start(vm, task)

        def undo(task: Task, error: str) -> None:
            with self.lock:
                for key, value in list(vm.config.items()):
                    if DRIVE_RE.match(key) or key.startswith("unused"):
                        try:
                            self._free_drive_value(key, value)
                        except TaskFailed:
                            pass
                self.vms.pop(vmid, None)
            task.log(f"unable to create VM {vmid} - {error}")

        return self._task("qmcreate", str(vmid), user, work, vmid, on_error=undo)

    def _config_update(self, p: dict[str, Any], user: str, sync: bool) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        if p.get("digest") and p["digest"] != self.digest(vm.config):
            raise die("detected modified configuration - file changed by other user? Try again.")
        if vm.is_template:
            for key in p:
                if DRIVE_RE.match(key) and self._parse(key, p[key]).get("media") != "cdrom":
                    raise die(f"unable to change disk '{key}' of a template")
        drives = self._check_config_params(vm.config, p, vm.vmid)
        # qemu-server src/PVE/API2/Qemu.pm $update_vm_api: the options deleted and set, the storages,
        # the bridges, and per drive VM.Config.CDROM (a CD-ROM) or VM.Config.Disk
        self.check_modify_config_perm(user, vm.vmid, formats.split_list(p.get("delete", "")))
        self.check_modify_config_perm(user, vm.vmid, list(p))
        self.check_storage_access(user, vm.vmid, drives)
        self.check_bridge_access(user, p)
        for drive in drives.values():
            cdrom = drive.get("media") == "cdrom" or drive.get("file") in ("none", "cdrom")
            self.access.check(user, f"/vms/{vm.vmid}", ["VM.Config.CDROM" if cdrom else "VM.Config.Disk"])
        if sync:
            try:
                self._apply_config(vm, p, drives, None)
            except TaskFailed as exc:
                raise die(str(exc)) from None
            return None

        def work(task: Task) -> None:
            with self.lock:
                self._apply_config(vm, p, drives, task)

        return self._task("qmconfig", str(vm.vmid), user, work, vm.vmid)

    @route("POST", "/nodes/{node}/qemu/{vmid}/config")
    def config_post(self, p: dict[str, Any], user: str) -> Any:
        return self._config_update(p, user, sync=False)

    @route("PUT", "/nodes/{node}/qemu/{vmid}/config")
    def config_put(self, p: dict[str, Any], user: str) -> Any:
        return self._config_update(p, user, sync=True)

    @route("PUT", "/nodes/{node}/qemu/{vmid}/cloudinit")
    def cloudinit(self, p: dict[str, Any], user: str) -> Any:
        self._vm(p["vmid"])
        return None

    @route("PUT", "/nodes/{node}/qemu/{vmid}/resize")
    def resize(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        key = p["disk"]
        if key not in vm.config:
            raise die(f"disk '{key}' does not exist")
        drive = self._parse(key, vm.config[key])
        if drive.get("media") == "cdrom":
            raise die("you can't resize a cdrom")
        vol = self._volume(drive["file"])
        if vol is None:
            raise die(f"volume '{drive['file']}' does not exist")
        m = re.match(r"^(\+)?(\d+(\.\d+)?[KMGT]?)$", p["size"])
        if not m:
            raise die("invalid size string")
        amount = parse_size(m.group(2)) or 0
        newsize = vol.size + amount if m.group(1) else amount
        if newsize < vol.size:
            raise die("shrinking disks is not supported")

        def work(task: Task) -> None:
            with self.lock:
                self.storages.resize(vol, newsize)
                drive["size"] = newsize
                vm.config[key] = print_property_string(drive, self._drive_format(key))
            task.log(f"Image resized to {format_size(newsize)}.")

        return self._task("resize", str(vm.vmid), user, work, vm.vmid)

    # --- VMs: power ----------------------------------------------------------------------------------
    def _do_start(self, vm: VM, task: Task) -> None:
        with self.lock:
            if vm.is_template:
                raise TaskFailed("you can't start a vm if it's a template")
            if self._running(vm.vmid):
                raise TaskFailed(f"VM {vm.vmid} already running")
            for key, value in vm.config.items():
                if re.match(r"^net\d+$", key):
                    bridge = self._parse(key, value).get("bridge")
                    if bridge and not self.bridge_exists(vm.node, bridge):
                        raise TaskFailed(f"bridge '{bridge}' does not exist")
            files = self.disk_files(vm)
            config = dict(vm.config)
        try:
            self.backend.start(vm.vmid, config, files)
        except Exception as exc:
            raise TaskFailed(f"start failed: {exc}") from None
        with self.lock:
            vm.started = time.monotonic()

    @route("POST", "/nodes/{node}/qemu/{vmid}/status/start")
    def vm_start(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        return self._task("qmstart", str(vm.vmid), user, lambda task: self._do_start(vm, task), vm.vmid)

    @route("POST", "/nodes/{node}/qemu/{vmid}/status/stop")
    def vm_stop(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)

        def work(task: Task) -> None:
            self.backend.stop(vm.vmid)
            with self.lock:
                vm.started = None

        return self._task("qmstop", str(vm.vmid), user, work, vm.vmid)

    @route("POST", "/nodes/{node}/qemu/{vmid}/status/reset")
    def vm_reset(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        if not self._running(vm.vmid):
            raise die(f"VM {vm.vmid} not running")

        def work(task: Task) -> None:
            self.backend.stop(vm.vmid)
            self._do_start(vm, task)

        return self._task("qmreset", str(vm.vmid), user, work, vm.vmid)

    @route("POST", "/nodes/{node}/qemu/{vmid}/status/shutdown")
    def vm_shutdown(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        timeout = int(p.get("timeout") or 60)
        force = p.get("forceStop") == "1"

        def work(task: Task) -> None:
            if not self.backend.is_running(vm.vmid):
                return
            if not self.backend.shutdown(vm.vmid, timeout):
                if not force:
                    raise TaskFailed("VM quit/powerdown failed - got timeout")
                task.log("VM still running - terminating now with SIGTERM")
                self.backend.stop(vm.vmid)
            with self.lock:
                vm.started = None

        return self._task("qmshutdown", str(vm.vmid), user, work, vm.vmid)

    # --- VMs: console (tests/pvesim/console.py; the WebSocket upgrade is tests/pvesim/websocket.py) ---------
    cluster_ca_pem = ""  # answered as vncproxy's "cert" (PVE: /etc/pve/pve-root-ca.pem); set by the simulator
    _vnc_tickets: VncTickets | None = None

    def _console_tickets(self) -> VncTickets:
        if self._vnc_tickets is None:
            self._vnc_tickets = VncTickets()
        return self._vnc_tickets

    def _console_after_2026_04(self) -> bool:
        """qemu-server commits 282ec11d and c9ee34b5 (2026-04; our 9.1 schema has them): a VNC password always,
        the ticket prefixed with it and bound to the port."""
        return not self.schema.version.startswith("8.")

    @route("POST", "/nodes/{node}/qemu/{vmid}/vncproxy")
    def vncproxy(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        vga = str(vm.config.get("vga", ""))
        if re.match(r"^(type=)?serial\d", vga):
            raise ApiError(501, "pvesim: vncproxy to a serial terminal (vncterm) is not simulated")
        later = self._console_after_2026_04()
        port, listener = listen_on_vnc_port()
        ticket = self._console_tickets().assemble(user, f"/vms/{vm.vmid}", port if later else None)
        password = vnc_password() if later or p.get("generate-password") == "1" else None
        vnc_secret = password or ticket  # PVE 8.4 without generate-password: the ticket is the VNC password
        if later:
            ticket = f"{password}:{ticket}"
        worker = proxy_worker(listener, lambda: self.backend.vnc_display(vm.vmid, vnc_secret))
        try:
            upid = self._task("vncproxy", str(vm.vmid), user, worker, vm.vmid)
        except BaseException:
            listener.close()
            raise
        answer = {"user": user, "ticket": ticket, "port": port, "upid": upid, "cert": self.cluster_ca_pem}
        if password is not None:
            answer["password"] = password
        return answer

    @route("GET", "/nodes/{node}/qemu/{vmid}/vncwebsocket")
    def vncwebsocket(self, p: dict[str, Any], user: str) -> Any:
        vmid, port = int(p["vmid"]), int(p["port"])
        bound = port if self._console_after_2026_04() else None
        if not self._console_tickets().verify(str(p["vncticket"]), user, f"/vms/{vmid}", bound):
            raise ApiError(401, "permission denied - invalid PVEVNC ticket")
        self._vm(vmid)  # "VM exists?"
        return {"port": str(port)}

    # --- VMs: template, clone, destroy ----------------------------------------------------------------
    @route("POST", "/nodes/{node}/qemu/{vmid}/template")
    def vm_template(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm)
        if vm.is_template and not p.get("disk"):
            raise die("you can't convert a template to a template")
        if self._running(vm.vmid):
            raise die("you can't convert a VM to template if VM is running")

        def work(task: Task) -> None:
            with self.lock:
                for key in sorted(vm.config):
                    if not DRIVE_RE.match(key) or (p.get("disk") and key != p["disk"]):
                        continue
                    drive = self._parse(key, vm.config[key])
                    if drive.get("media") == "cdrom":
                        continue
                    vol = self._volume(drive["file"])
                    if vol is None:
                        raise TaskFailed(f"volume '{drive['file']}' does not exist")
                    old = vol.volname
                    base = self.storages.make_base(vol)
                    task.log(f"  Renamed \"{old}\" to \"{base.volname}\" in volume group \"pve\"")
                    drive["file"] = base.volid
                    vm.config[key] = print_property_string(drive, self._drive_format(key))
                vm.config["template"] = "1"

        return self._task("qmtemplate", str(vm.vmid), user, work, vm.vmid)

    @route("POST", "/nodes/{node}/qemu/{vmid}/clone")
    def vm_clone(self, p: dict[str, Any], user: str) -> Any:
        # qemu-server src/PVE/API2/Qemu.pm clone_vm ($load_and_check, $check_storage_access_clone)
        src = self._vm(p["vmid"])
        newid = int(p["newid"])
        target = p.get("target") if p.get("target") not in (None, self.current_node, "localhost") else None
        if target:
            self._check_node(target)  # PVE::Cluster::check_node_exists
        if p.get("snapname"):
            raise die(f"snapshot '{p['snapname']}' does not exist")
        target_storage = self._storage(p["storage"]) if p.get("storage") else None
        if target_storage and "images" not in target_storage.content:
            raise ParamError({"storage": f"storage '{target_storage.id}' does not support vm images"})
        if target_storage and target:
            if not self.storages.enabled_on(target_storage, target):
                raise die(f"storage '{target_storage.id}' is not available on node '{target}'")
            if not target_storage.shared:
                raise die(f"can't clone to non-shared storage '{target_storage.id}'")
        if not src.is_template:
            self._check_lock(src)
        full = p["full"] == "1" if p.get("full") is not None else not src.is_template
        if not full and p.get("storage"):
            raise die("parameter 'storage' not allowed for linked clones")
        if not full and p.get("format"):
            raise die("parameter 'format' not allowed for linked clones")
        shared_vm = True
        for key in sorted(src.config):
            if DRIVE_RE.match(key):
                drive = self._parse(key, src.config[key])
                volid = drive.get("file", "")
                if volid in ("", "none"):
                    continue
                if drive.get("media") == "cdrom" and volid == "cdrom":
                    self.access.check(user, "/", ["Sys.Console"])
                    continue
                sdef = self.storages.get(volid.split(":", 1)[0])
                shared_vm = shared_vm and sdef is not None and sdef.shared
                if drive.get("media") != "cdrom":
                    sid = target_storage.id if target_storage else volid.split(":", 1)[0]
                    self.access.check(user, f"/storage/{sid}", ["Datastore.AllocateSpace"])
        self.check_bridge_access(user, src.config)
        if target and not shared_vm:
            raise die(f"can't clone VM to node '{target}' (VM uses local storage)")
        if newid in self.vms:
            raise die(f"unable to create VM {newid}: config file already exists")
        disks: list[tuple[str, dict[str, Any], Volume]] = []
        for key in sorted(src.config):
            if not DRIVE_RE.match(key):
                continue
            drive = self._parse(key, src.config[key])
            if drive.get("media") == "cdrom":
                continue
            vol = self._volume(drive["file"])
            if vol is None:
                raise die(f"volume '{drive['file']}' does not exist")
            if not full and not Path(vol.volname).name.startswith("base-"):
                raise die(f"linked clone feature is not supported for drive '{key}'")
            disks.append((key, drive, vol))
        new = VM(newid, {}, lock="clone", node=target or self.current_node)
        self.vms[newid] = new
        if not src.is_template:
            src.lock = "clone"

        def work(task: Task) -> None:
            with self.lock:
                config = {k: v for k, v in src.config.items()
                          if k not in ("template", "lock", "smbios1", "vmgenid", "meta") and not k.startswith("unused")}
                config["name"] = p.get("name") or f"Copy-of-VM-{src.config.get('name', src.vmid)}"
                if p.get("description") is not None:
                    config["description"] = p["description"]
                for key, value in list(config.items()):
                    if re.match(r"^net\d+$", key):
                        net = self._parse(key, value)
                        net["macaddr"] = self._random_mac()
                        config[key] = print_property_string(net, self._drive_format(key))
                for key, drive, vol in disks:
                    sdef = target_storage or self._storage(vol.storage)
                    task.log(f"create {'full' if full else 'linked'} clone of drive {key} ({vol.volid})")
                    node = new.node
                    newvol = (self.storages.alloc_copy(sdef, node, newid, vol) if full
                              else self.storages.alloc_linked(sdef, node, newid, vol))
                    drive = dict(drive, file=newvol.volid, size=newvol.size)
                    config[key] = print_property_string(drive, self._drive_format(key))
                config["smbios1"] = f"uuid={uuid.uuid4()}"
                config["vmgenid"] = str(uuid.uuid4())
                config["meta"] = f"creation-qemu=9.2.0,ctime={int(time.time())}"
                new.config = config
                new.lock = None
                if src.lock == "clone":
                    src.lock = None

        def undo(task: Task, error: str) -> None:
            with self.lock:
                for key, value in list(new.config.items()):
                    if DRIVE_RE.match(key):
                        try:
                            self._free_drive_value(key, value)
                        except TaskFailed:
                            pass
                for vol in [v for v in self.storages.visible(new.node) if v.vmid == newid]:
                    self.storages.free(vol)
                self.vms.pop(newid, None)
                if src.lock == "clone":
                    src.lock = None

        return self._task("qmclone", str(src.vmid), user, work, src.vmid, on_error=undo)

    @route("DELETE", "/nodes/{node}/qemu/{vmid}")
    def vm_destroy(self, p: dict[str, Any], user: str) -> Any:
        vm = self._vm(p["vmid"])
        self._check_lock(vm, p)
        if self._running(vm.vmid):
            raise die(f"VM {vm.vmid} is running - destroy failed")
        vm.lock = "destroyed"

        def work(task: Task) -> None:
            with self.lock:
                for key in sorted(vm.config):
                    if DRIVE_RE.match(key) or key.startswith("unused"):
                        self._free_drive_value(key, vm.config[key])
                        if not key.startswith("unused"):
                            drive = self._parse(key, vm.config[key])
                            if drive.get("media") != "cdrom":
                                task.log(f"  Logical volume \"{Path(drive['file'].split(':', 1)[1]).name}\" successfully removed.")  # noqa: E501
                if p.get("destroy-unreferenced-disks", "1") == "1":
                    for vol in [v for v in self.storages.visible(vm.node) if v.vmid == vm.vmid and v.content == "images"]:
                        self.storages.free(vol)
                self.vms.pop(vm.vmid, None)

        def undo(task: Task, error: str) -> None:
            with self.lock:
                vm.lock = None

        return self._task("qmdestroy", str(vm.vmid), user, work, vm.vmid, on_error=undo)

    # --- guest agent --------------------------------------------------------------------------------
    def _agent_enabled(self, value: str) -> bool:
        try:
            parsed = parse_property_string(self.create_props["agent"]["format"], value)
        except FormatError:
            return False
        return parsed.get("enabled") == "1"

    def _agent_guard(self, p: dict[str, Any]) -> int:
        vm = self._vm(p["vmid"])
        agent = vm.config.get("agent")
        if not agent or not self._agent_enabled(agent):
            raise die("No QEMU guest agent configured")
        if not self._running(vm.vmid):
            raise die(f"VM {vm.vmid} is not running")
        if self.faults.take_agent_fault(vm.vmid):
            raise die("QEMU guest agent is not running")
        return vm.vmid

    def _agent_call(self, fn: Callable[[], Any]) -> Any:
        self.lock.release()  # a real agent call may take a while: do not block the node
        try:
            return fn()
        except AgentUnavailable:
            raise die("QEMU guest agent is not running") from None
        finally:
            self.lock.acquire()

    @route("GET", "/nodes/{node}/qemu/{vmid}/agent/network-get-interfaces")
    def agent_interfaces(self, p: dict[str, Any], user: str) -> Any:
        vmid = self._agent_guard(p)
        return {"result": self._agent_call(lambda: self.backend.agent_interfaces(vmid))}

    @route("GET", "/nodes/{node}/qemu/{vmid}/agent/get-host-name")
    def agent_hostname(self, p: dict[str, Any], user: str) -> Any:
        vmid = self._agent_guard(p)
        return {"result": {"host-name": self._agent_call(lambda: self.backend.agent_hostname(vmid))}}

    @route("POST", "/nodes/{node}/qemu/{vmid}/agent/ping")
    def agent_ping(self, p: dict[str, Any], user: str) -> Any:
        vmid = self._agent_guard(p)
        self._agent_call(lambda: self.backend.agent_ping(vmid))
        return {"result": {}}


def normalize_content_filename(name: str) -> str:
    """``PVE::Storage::normalize_content_filename``."""
    name = name.rstrip("\n")
    name = re.sub(r"^.*[/\\]", "", name, flags=re.S)
    return re.sub(r"[^a-zA-Z0-9_.-]", "_", name)


def hash_file(algo: str, path: Path) -> str:
    digest = hashlib.new(algo)
    with open(path, "rb") as fh:
        while chunk := fh.read(4 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def served_routes() -> set[tuple[str, str]]:
    """(method, path template) of every API method the simulator implements."""
    return {fn.route for cls in (PveApi, SdnApi) for fn in vars(cls).values()
            if callable(fn) and getattr(fn, "route", None)}
