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
from tests.pvesim.backends import AgentUnavailable, DiskFile, VMBackend
from tests.pvesim.faults import FaultInjector
from tests.pvesim.formats import FormatError, format_size, parse_size, parse_volume_id
from tests.pvesim.schema import ApiSchema, parse_property_string, perl_str, print_property_string
from tests.pvesim.storage import StorageDef, Storages, Volume
from tests.pvesim.tasks import Task, TaskBehaviour, TaskFailed, TaskManager

NEW_DISK_RE = re.compile(r"^(([^/:\s]+):)?(\d+(\.\d+)?)$")
DRIVE_RE = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
NOT_CONFIG = {
    "node", "vmid", "digest", "delete", "revert", "skiplock", "force", "background_delay", "start",
    "storage", "unique", "archive", "pool", "bwlimit", "live-restore", "import-working-storage",
}


class ApiError(Exception):
    """An error answer: HTTP *status*, PVE's *message* (reason phrase) and optional *errors*."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class ParamError(ApiError):
    """``raise_param_exc``: 400 Parameter verification failed. *probe*: a legitimate availability probe."""

    def __init__(self, errors: dict[str, str], *, probe: bool = False) -> None:
        super().__init__(400, "Parameter verification failed.", errors)
        self.probe = probe


def die(message: str) -> ApiError:
    return ApiError(500, message)


@dataclass
class Result:
    data: Any
    total: int | None = None


@dataclass
class VM:
    vmid: int
    config: dict[str, str] = field(default_factory=dict)
    lock: str | None = None
    started: float | None = None

    @property
    def is_template(self) -> bool:
        return self.config.get("template") == "1"


Handler = Callable[[dict[str, Any], str], Any]


class PveApi:
    def __init__(
        self, *, node: str, pve_version: str, schema: ApiSchema, storages: Storages, tasks: TaskManager, backend: VMBackend,
        faults: FaultInjector, lock: threading.RLock, bridges: tuple[str, ...] = ("vmbr0",),
    ) -> None:
        self.node = node
        self.pve_version = pve_version
        self.schema = schema
        self.storages = storages
        self.tasks = tasks
        self.backend = backend
        self.faults = faults
        self.lock = lock
        self.bridges = set(bridges)
        self.vms: dict[int, VM] = {}
        self.create_props = schema.find("POST", "/nodes/{node}/qemu").properties
        self.routes: dict[tuple[str, str], Handler] = {}
        for name in dir(self):
            fn = getattr(self, name)
            route = getattr(fn, "route", None)
            if route:
                self.routes[route] = fn

    # --- helpers ------------------------------------------------------------------------------
    def call(self, method: str, template: str, params: dict[str, Any], user: str) -> Result:
        handler = self.routes.get((method, template))
        if handler is None:
            raise ApiError(501, f"Method '{method} {template}' not implemented")
        if "node" in params:
            self._check_node(params["node"])
        with self.lock:
            out = handler(params, user)
        return out if isinstance(out, Result) else Result(out)

    def _check_node(self, node: str) -> None:
        if node != self.node:
            raise die(f"hostname lookup '{node}' failed - failed to get address info for: {node}: Name or service not known")

    def _vm(self, vmid: Any) -> VM:
        vm = self.vms.get(int(vmid))
        if vm is None:
            raise die(f"Configuration file 'nodes/{self.node}/qemu-server/{int(vmid)}.conf' does not exist")
        return vm

    @staticmethod
    def _check_lock(vm: VM, params: dict[str, Any] | None = None) -> None:
        if vm.lock and not (params and params.get("skiplock") == "1"):
            raise die(f"VM is locked ({vm.lock})")

    def _storage(self, storage_id: str) -> StorageDef:
        sdef = self.storages.get(storage_id)
        if sdef is None:
            raise die(f"storage '{storage_id}' does not exist")
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
        return self.tasks.start(kind, id, user, body, behaviour, on_error).upid

    def _drive_format(self, key: str) -> dict[str, Any]:
        return self.create_props[key]["format"]

    def _parse(self, key: str, value: str) -> dict[str, Any]:
        fmt = self.create_props[key]["format"]
        try:
            return parse_property_string(fmt, value, key)
        except FormatError as exc:  # the schema already accepted it; keep the message anyway
            raise ParamError({key: "invalid format - " + exc.stringify()}) from None

    def _volume(self, volid: str) -> Volume | None:
        return self.storages.volumes.get(volid)

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
            vol = self._volume(volid)
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
        # pve-manager PVE/API2/Version.pm: version (pve-manager's), release (major.minor), repoid
        release = ".".join(self.pve_version.split(".")[:2])
        repoid = hashlib.sha1(self.pve_version.encode()).hexdigest()[:16]
        return {"release": release, "repoid": repoid, "version": self.pve_version}

    def has_route(self, method: str, template: str) -> bool:
        return (method, template) in self.routes

    @route("GET", "/nodes")
    def nodes(self, p: dict[str, Any], user: str) -> Any:
        return [{"node": self.node, "id": f"node/{self.node}", "type": "node", "status": "online", "level": "",
                 "maxcpu": 2, "cpu": 0.02, "maxmem": 24 << 30, "mem": 2 << 30, "maxdisk": 100 << 30,
                 "disk": 10 << 30, "uptime": 3600}]

    @route("GET", "/cluster/resources")
    def cluster_resources(self, p: dict[str, Any], user: str) -> Any:
        out: list[dict[str, Any]] = []
        kind = p.get("type")
        if kind in (None, "vm"):
            for vm in sorted(self.vms.values(), key=lambda v: v.vmid):
                out.append({"id": f"qemu/{vm.vmid}", "type": "qemu", **self._vm_summary(vm)})
        if kind in (None, "storage"):
            for sdef in self.storages.defs.values():
                out.append({"id": f"storage/{self.node}/{sdef.id}", "type": "storage", "storage": sdef.id,
                            "node": self.node, "status": "available", "plugintype": sdef.type,
                            "content": ",".join(sdef.content), "shared": 0, "maxdisk": sdef.total,
                            "disk": self.storages.used(sdef.id)})
        if kind in (None, "node"):
            out.append({"id": f"node/{self.node}", "type": "node", "node": self.node, "status": "online"})
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

    @route("POST", "/access/ticket")
    def ticket(self, p: dict[str, Any], user: str) -> Any:
        raise ApiError(401, "authentication failure")

    # --- storage ------------------------------------------------------------------------------
    def _storage_status(self, sdef: StorageDef) -> dict[str, Any]:
        used = self.storages.used(sdef.id)
        return {"storage": sdef.id, "type": sdef.type, "content": ",".join(sorted(sdef.content)), "active": 1,
                "enabled": 1, "shared": 0, "total": sdef.total, "used": used, "avail": sdef.total - used,
                "used_fraction": used / sdef.total}

    @route("GET", "/nodes/{node}/storage")
    def storage_index(self, p: dict[str, Any], user: str) -> Any:
        out = []
        wanted = set(formats.split_list(p.get("content", "")))
        for sdef in self.storages.defs.values():
            if p.get("storage") and p["storage"] != sdef.id:
                continue
            if wanted and not wanted & set(sdef.content):
                continue
            out.append(self._storage_status(sdef))
        return out

    @route("GET", "/nodes/{node}/storage/{storage}/status")
    def storage_status(self, p: dict[str, Any], user: str) -> Any:
        sdef = self.storages.get(p["storage"])
        if sdef is None:
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
        for vol in sorted(self.storages.volumes.values(), key=lambda v: v.volid):
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
        # pve-storage src/PVE/API2/Storage/Content.pm 'info': volume_size_info -> file_size_info with the
        # volume's format, so a qcow2 (images or import) shows its virtual size here, unlike in the listing.
        return {"path": str(vol.path), "size": vol.size, "used": vol.path.stat().st_size, "format": vol.format}

    @route("DELETE", "/nodes/{node}/storage/{storage}/content/{volume}")
    def content_delete(self, p: dict[str, Any], user: str) -> Any:
        volid = self._real_volid(p["storage"], p["volume"])
        vol = self._volume(volid)
        ownervm = vol.vmid if vol else None
        if (vol is not None and vol.content == "images" and ownervm in self.vms
                and any(volid in v for v in self.vms[ownervm].config.values())):
            raise die(f"unable to delete '{volid}' - volume is still in use (VM {ownervm})")

        def work(task: Task) -> None:
            with self.lock:
                if not self.storages.free(volid):
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

    def upload(self, p: dict[str, Any], user: str, tmpfile: Path) -> str:
        """``POST .../upload`` after the body is on disk (server.py streams it into *tmpfile*)."""
        with self.lock:
            self._check_node(p["node"])
            sdef = self._storage(p["storage"])
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
            dest = sdef.content_dir(content) / name
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
                task.log(f"target node: {self.node}")
                task.log(f"target file: {dest}")
                task.log(f"file size is: {size}")
                task.log(f"command: cp -- {tmpfile} {dest}")
                dest.parent.mkdir(parents=True, exist_ok=True)
                tmpfile.replace(dest)  # same file system: the "copy" is a rename
                with self.lock:
                    self.storages.add_file(sdef, content, name, dest)
                task.log("finished file import successfully")

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
        dest = sdef.content_dir(content) / name
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
                self.storages.add_file(sdef, content, name, dest)
            task.log(f"download of '{url}' to '{dest}' finished")

        return self._task("download", sdef.id, user, work)

    # --- tasks --------------------------------------------------------------------------------
    def _get_task(self, upid: str) -> Task:
        task = self.tasks.get(upid)
        if task is None:
            if not re.match(r"^UPID:[^:]+:[0-9A-F]{8}:[0-9A-F]{8,9}:[0-9A-F]{8}:[^:]+:[^:]*:[^:]+:$", upid):
                raise die(f"unable to parse worker upid '{upid}'")
            raise die("no such task")
        return task

    @route("GET", "/nodes/{node}/tasks/{upid}/status")
    def task_status(self, p: dict[str, Any], user: str) -> Any:
        return self._get_task(p["upid"]).status_dict()

    @route("GET", "/nodes/{node}/tasks/{upid}/log")
    def task_log(self, p: dict[str, Any], user: str) -> Any:
        task = self._get_task(p["upid"])
        start = int(p.get("start") or 0)
        limit = int(p.get("limit") or 50)
        lines = task.lines if task.lines else [(0.0, "no content")]
        sel = lines[start:] if limit == 0 else lines[start : start + limit]
        return Result([{"n": start + i + 1, "t": text} for i, (_, text) in enumerate(sel)], total=len(lines))

    @route("GET", "/nodes/{node}/tasks")
    def task_list(self, p: dict[str, Any], user: str) -> Any:
        out = []
        for task in sorted(self.tasks.tasks.values(), key=lambda t: -t.starttime):
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
        task = self._get_task(p["upid"])
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
            "vmid": vm.vmid, "name": vm.config.get("name", f"VM {vm.vmid}"), "node": self.node,
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
                vol = self._volume(drive.get("file", ""))
                if vol is not None:
                    vols.append(vol)
        return vols

    @route("GET", "/nodes/{node}/qemu")
    def vm_list(self, p: dict[str, Any], user: str) -> Any:
        return [self._vm_summary(vm) for vm in sorted(self.vms.values(), key=lambda v: v.vmid)]

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
                vol = self.storages.alloc_copy(sdef, vmid, src)
                if task:
                    task.log(f"  Logical volume \"{Path(vol.volname).name}\" created.")
                    task.log(f"transferred {format_size(src.size)} of {format_size(src.size)} (100.00%)")
                    task.log(f"Successfully imported disk as '{key}:{vol.volid}'")
            else:
                size = int(float(m.group(3)) * (1 << 30))
                if size <= 0:
                    raise TaskFailed("unable to create image: size must be greater than zero")
                vol = self.storages.alloc_blank(sdef, vmid, size)
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
        if vol.volid.split(":", 1)[1].startswith("base-") and self.storages.clones_of(vol.volid):
            raise TaskFailed(f"base volume '{vol.volname}' is still in use by linked cloned")
        self.storages.free(vol.volid)

    def _next_unused(self, config: dict[str, str]) -> str:
        for i in range(256):
            if f"unused{i}" not in config:
                return f"unused{i}"
        raise TaskFailed("too many unused volumes")

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
        if vmid in self.vms:
            raise die(f"unable to create VM {vmid}: config file already exists")
        drives = self._check_config_params({}, p, vmid)
        vm = VM(vmid, {}, lock="create")
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
                    if bridge and bridge not in self.bridges:
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
        src = self._vm(p["vmid"])
        newid = int(p["newid"])
        if p.get("snapname"):
            raise die(f"snapshot '{p['snapname']}' does not exist")
        if p.get("target") and p["target"] != self.node:
            self._check_node(p["target"])
        if not src.is_template:
            self._check_lock(src)
        full = p["full"] == "1" if p.get("full") is not None else not src.is_template
        if not full and p.get("storage"):
            raise die("parameter 'storage' not allowed for linked clones")
        if not full and p.get("format"):
            raise die("parameter 'format' not allowed for linked clones")
        if newid in self.vms:
            raise die(f"unable to create VM {newid}: config file already exists")
        target_storage = self._storage(p["storage"]) if p.get("storage") else None
        if target_storage and "images" not in target_storage.content:
            raise die(f"storage '{target_storage.id}' does not support vm images")
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
        new = VM(newid, {}, lock="clone")
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
                    newvol = self.storages.alloc_copy(sdef, newid, vol) if full else self.storages.alloc_linked(sdef, newid, vol)
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
                for vol in [v for v in self.storages.volumes.values() if v.vmid == newid]:
                    self.storages.free(vol.volid)
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
                    for vol in [v for v in self.storages.volumes.values() if v.vmid == vm.vmid and v.content == "images"]:
                        self.storages.free(vol.volid)
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
    return {fn.route for fn in vars(PveApi).values() if callable(fn) and getattr(fn, "route", None)}
