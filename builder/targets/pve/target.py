"""The Proxmox VE target: VMs on the nodes of a PVE cluster (or one node), through its API with a token.

Before a job changes anything, ``preflight`` checks what it needs: the node's version (8.4 or later),
where the VM goes (a pinned node, else the online node with the most free memory; ``cluster.py``), the
storages and the bridge on that node, and the token's privileges (``privileges.py``), failing in
seconds with what to change. Artifacts are uploaded to storages under content-addressed names
(``upload.py``): a shared storage holds one copy for the whole cluster, a node-local one a copy per
node that needs it. VMs are created from a VMSpec (``vmconfig.py``) with a virtio disk imported from
the golden image or blank, the seed (and installer) ISOs as IDE CD-ROMs, a virtio NIC on the recipe's
bridge; every task is awaited and checked (``client.py``). A VM's ident is its vmid; ``VM.data["node"]``
is the node it lives on. VMs imgbuild created carry the tag ``imgbuild``; others are never replaced or
destroyed. Guests are reached at the address their agent reports, directly or through an SSH jump
host (``jump.py``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from builder import qcow2
from builder.cachedir import cached_sha256
from builder.errors import ImgbuildError, InvalidInput
from builder.progress import NullProgress, Progress
from builder.recipe.model import derived_mac
from builder.targets.base import VM, ArtifactKind, Endpoint, GuestNetwork, Staged, Target, VMSpec
from builder.targets.local.agent import usable_addresses
from builder.targets.pve import nat, privileges, screen, vmconfig
from builder.targets.pve.client import PveClient, PveError, volume_path
from builder.targets.pve.cluster import RESERVATIONS, ClusterView, choose_node, fmt_gib
from builder.targets.pve.jump import JumpHost
from builder.targets.pve.upload import Uploader, upload_name

log = logging.getLogger(__name__)

START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
CONFIG_TIMEOUT = 120.0
MIN_VERSION = (8, 4)
HOST_BRIDGE = re.compile(r"^vmbr\d+$")  # PVE's name for a node's Linux bridges


def pve_release(version: dict[str, Any]) -> tuple[int, int]:
    """(major, minor) of a ``GET /version`` answer (``release`` "9.1", or ``version`` "9.1.1")."""
    text = str(version.get("release") or version.get("version") or "")
    m = re.match(r"^(\d+)\.(\d+)", text)
    if not m:
        raise ImgbuildError(f"Proxmox VE answered /version without a version ({version!r})")
    return int(m.group(1)), int(m.group(2))


def check_release(version: dict[str, Any], where: str) -> tuple[int, int]:
    release = pve_release(version)
    if release < MIN_VERSION:
        shown = version.get("version") or version.get("release")
        raise ImgbuildError(
            f"Proxmox VE {shown} on {where} is too old: imgbuild needs Proxmox VE 8.4 or later",
            detail="golden images are uploaded as qcow2 files into a storage's 'import' content, which pve-storage "
                   "accepts from 8.3.6 on (shipped with Proxmox VE 8.4); upgrade the node (apt update && apt "
                   "full-upgrade), or pin another node")
    return release


class PveTarget(Target):
    def __init__(self, client: PveClient, *, jump: JumpHost | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.config = client.config
        self.name = self.config.name
        self.node = self.config.node  # pinned by the target's settings (None: chosen per VM)
        self.jump = jump
        self._sleep = sleep
        self._release: tuple[int, int] | None = None
        self._releases: dict[str, tuple[int, int]] = {}  # node -> (major, minor)
        self._storages: dict[str, dict[str, dict[str, Any]]] = {}  # node -> storage -> GET /nodes/{node}/storage
        self._job = threading.local()  # the node preflight chose for the job running in this thread
        self._reserved: set[str] = set()  # VMs whose memory this target reserved on their node (cluster.py)
        self._reserved_lock = threading.Lock()
        self._default_node: str | None = None

    @property
    def task_timeout(self) -> float:
        return self.config.task_timeout

    @property
    def address_timeout(self) -> float:  # type: ignore[override]
        return self.config.agent_timeout

    def _wait(self, usual: float) -> float:
        """How long to wait for a quick task: its usual bound, or less when the target sets a shorter one."""
        return min(usual, self.task_timeout)

    @property
    def release(self) -> tuple[int, int]:
        if self._release is None:
            self._release = check_release(self.client.get("/version") or {}, self.config.url)
        return self._release

    def check_connection(self) -> dict[str, Any]:
        """The API's version (8.4 or later) and the pinned node; fails early with a clear error on a bad URL,
        certificate or token, an old Proxmox VE or a node that does not exist."""
        version = self.client.get("/version") or {}
        self._release = check_release(version, self.config.url)
        if self.node is not None:
            self._known_node(self.node, self.config.setting_name("node"))
        return version

    def _known_node(self, node: str, where: str) -> dict[str, Any]:
        nodes = {str(n.get("node")): n for n in self.client.get("/nodes") or []}
        if node not in nodes:
            raise InvalidInput(f"Proxmox VE at {self.config.url} has no node {node!r} "
                               f"(nodes: {', '.join(sorted(nodes)) or 'none'})",
                               detail=f"change {where} ({self.config.source if 'vm.node' not in where else 'the recipe'})")
        return nodes[node]

    def close(self) -> None:
        with self._reserved_lock:
            for name in self._reserved:
                RESERVATIONS.release(self.config.url, name)
            self._reserved.clear()
        if self.jump is not None:
            self.jump.close()

    # --- before anything changes -----------------------------------------------------------------
    def preflight(self, spec: VMSpec, *, media: tuple[ArtifactKind, ...] = (), source: VM | None = None,
                  console: bool = False, progress: Progress = NullProgress()) -> None:
        """Everything *spec* needs, checked before anything is uploaded or created: the node (pinned, or
        chosen by free memory and CPU), its version, the token's privileges, the storages' content
        types, the bridge or NAT network. Remembers the node for this job's stage/create/clone."""
        view = ClusterView.parse(self.client.get("/cluster/resources") or [])
        pinned, pinned_by = (spec.node, "vm.node (the recipe)") if spec.node else (
            self.node, self.config.setting_name("node"))
        allowed = self._clone_nodes(source, view) if source is not None else None
        network = nat.requested(spec, self.config.sdn_zone)
        sdn_changes = bool(network and network.sdn and not nat.in_place(self.client, network))
        vmid = spec.vmid if spec.vmid is not None else int(self.client.get("/cluster/nextid"))
        image = "image" in media
        candidates = [pinned] if pinned else sorted(allowed or view.online)
        plan = privileges.Plan(
            major=self.release[0], vm_path=f"/vms/{vmid}",
            vm_keys=tuple(vmconfig.create_params(spec, vmid=vmid, disk_storage=self.config.disk_storage))
            if source is None else ("net0", "ipconfig0", "ide2"),
            iso_storage=self.config.iso_storage if "iso" in media or not media else None,
            image_storage=self.config.image_storage if image else None,
            disk_storage=self.config.disk_storage,
            bridges=tuple(self._bridge_zone(nic.bridge, nic.vlan, network) for nic in spec.nics),
            node_paths=() if pinned else tuple(f"/nodes/{n}" for n in candidates if view.nodes.get(n)),
            console=console, clone_from=f"/vms/{self._vmid(source)}" if source is not None else None,
            sdn_zone=network.zone if network and sdn_changes else None,
            sdn_vnet=network.vnet if network and sdn_changes else None,
            new_zone=sdn_changes,
        )
        self.check_privileges(plan)
        if not pinned and len(view.online) > 1:  # a cluster being upgraded: only nodes new enough take the VM
            current = {n for n in (allowed or set(view.online)) if self._node_release(n) >= MIN_VERSION}
            if not current:
                raise ImgbuildError(f"no online node of {self.name} runs Proxmox VE 8.4 or later",
                                    detail="golden images are uploaded as qcow2 into 'import' content, which "
                                           "pve-storage accepts from 8.3.6 on (Proxmox VE 8.4); upgrade a node")
            allowed = current
        node = self._place(spec, view, pinned, pinned_by, allowed, progress)
        self._check_node_version(node)
        self._check_storages(node, media, clone=source is not None)
        if network is not None:
            nat.check(self.client, node, network, self.config)
        else:
            self._check_bridges(node, spec)
        self._job.node = node

    def check_privileges(self, plan: privileges.Plan) -> None:
        """Fail with the missing privileges and the pveum commands that grant them."""
        required = privileges.needs(plan)
        have = {path: self.privileges_on(path) for path in {n.path for n in required}}
        missing = privileges.shortfall(required, have)
        if missing:
            raise ImgbuildError(f"the API token {self.config.token_id} lacks privileges this job needs on "
                                f"{self.name}: " + "; ".join(sorted({f'{", ".join(p)} on {n.path}'
                                                                    for n, p in missing.missing})),
                                detail=privileges.advice(missing, self.config.token_id, plan.major))

    def privileges_on(self, path: str) -> set[str]:
        """The token's effective privileges on *path* (``GET /access/permissions?path=``, PVE's own answer)."""
        answer = self.client.get("/access/permissions", path=path) or {}
        return {p for p, v in (answer.get(path) or {}).items() if v is not None}

    def _bridge_zone(self, bridge: str, tag: int | None, network: nat.NatNetwork | None) -> tuple[str, str, int | None]:
        """(SDN zone, bridge, tag) as pve-guest-common's check_vnet_access sees a NIC."""
        if network is not None and network.sdn and bridge == network.vnet:
            return network.zone, bridge, tag
        if HOST_BRIDGE.match(bridge):
            return "localnetwork", bridge, tag
        try:
            vnets = {str(v.get("vnet")): str(v.get("zone")) for v in self.client.get("/cluster/sdn/vnets") or []}
        except PveError:
            vnets = {}
        return vnets.get(bridge, "localnetwork"), bridge, tag

    def _clone_nodes(self, source: VM, view: ClusterView) -> set[str]:
        """Where a clone of *source* can go: any online node when its disks are on shared storage (PVE clones
        with ``target``), else only its own node (qemu-server refuses: "VM uses local storage")."""
        home = str(source.data.get("node"))
        config = self.client.get(f"{self._qemu(source)}/config") or {}
        local = sorted({v.split(":", 1)[0] for k, v in ((k, str(v).split(",")[0]) for k, v in config.items())
                        if re.fullmatch(r"(virtio|scsi|sata|ide)\d+|efidisk0", k) and ":" in v
                        and "media=cdrom" not in str(config[k]) and not view.is_shared(v.split(":", 1)[0])})
        if local:
            source.data["local_storages"] = local
            return {home}
        return set(view.online)

    def _place(self, spec: VMSpec, view: ClusterView, pinned: str | None, pinned_by: str,
               allowed: set[str] | None, progress: Progress) -> str:
        memory = spec.memory_mib << 20
        if pinned:
            if pinned not in view.nodes:
                self._known_node(pinned, pinned_by)
            if not view.nodes[pinned].online:
                raise ImgbuildError(f"node {pinned} of {self.name} is offline",
                                    detail=f"pinned by {pinned_by}; bring it back, or pin an online node "
                                           f"({', '.join(view.online) or 'none online'})")
            if allowed is not None and pinned not in allowed:
                raise ImgbuildError(
                    f"cannot clone onto node {pinned}: the template's disks are on node-local storage",
                    detail="Proxmox VE clones to another node only from shared storage; run the clone on "
                           f"{', '.join(sorted(allowed))}, or keep templates on a shared storage (disk_storage)")
            RESERVATIONS.hold(self.config.url, spec.name, pinned, memory)
            self._remember(spec.name)
            return pinned
        with RESERVATIONS.placing:  # jobs of this process choose one after the other, each seeing the others'
            if len(view.online) == 1 and (allowed is None or view.online[0] in allowed):
                node = view.online[0]  # one node: nothing to choose (its figures may not even be visible)
            else:
                placement = choose_node(view.nodes, memory, RESERVATIONS.on(self.config.url), allowed)
                if placement.node is None:
                    raise ImgbuildError(f"nowhere to run {spec.name} ({fmt_gib(memory)}) on {self.name}: "
                                        f"{placement.reason}",
                                        detail="free memory on a node, lower vm.memory in the recipe, or pin a node")
                node = placement.node
                progress.note(f"placing {spec.name} on {placement.reason}")
            RESERVATIONS.hold(self.config.url, spec.name, node, memory)
        self._remember(spec.name)
        return node

    def _remember(self, name: str) -> None:
        with self._reserved_lock:
            self._reserved.add(name)

    def _node_release(self, node: str) -> tuple[int, int]:
        if node not in self._releases:
            self._releases[node] = pve_release(self.client.get(f"/nodes/{node}/version") or {})
        return self._releases[node]

    def _check_node_version(self, node: str) -> None:
        if self._node_release(node) < MIN_VERSION:
            check_release(self.client.get(f"/nodes/{node}/version") or {}, f"node {node}")

    def _node_storages(self, node: str) -> dict[str, dict[str, Any]]:
        if node not in self._storages:
            self._storages[node] = {str(e.get("storage")): e for e in self.client.get(f"/nodes/{node}/storage") or []}
        return self._storages[node]

    def _check_storages(self, node: str, media: tuple[ArtifactKind, ...], *, clone: bool = False) -> None:
        wanted: list[tuple[str, str, str]] = []  # (storage, content, setting)
        if "iso" in media or not media:
            wanted.append((self.config.iso_storage, "iso", "iso_storage"))
        if "image" in media:
            wanted.append((self.config.image_storage, "import", "import_storage"))
        if not clone:
            wanted.append((self.config.disk_storage, "images", "disk_storage"))
        for storage, content, setting in wanted:
            self._storage_content(storage, content, node, setting)

    def _storage_content(self, storage: str, content: str, node: str, setting: str) -> dict[str, Any]:
        entry = self._node_storages(node).get(storage)
        name = self.config.setting_name(setting)
        if entry is None:
            known = ", ".join(sorted(self._node_storages(node))) or "none"
            raise ImgbuildError(f"storage {storage!r} is not available on node {node} (storages there: {known})",
                                detail=f"choose another with {name}; a storage restricted to other nodes, disabled, "
                                       f"or hidden from the token (Datastore.Audit) is not listed")
        types = {c for c in str(entry.get("content", "")).split(",") if c}
        if content not in types:
            what = {"iso": "ISO images", "import": "disk images for import", "images": "VM disks"}[content]
            detail = (f"enable it with `pvesm set {storage} --content {','.join(sorted(types | {content}))}` "
                      f"or choose another storage with {name}")
            if content == "import":
                detail = ("golden images are uploaded with content type 'import' (Proxmox VE 8.4 or later): "
                          + detail + "; or use --method installer")
            raise ImgbuildError(f"storage {storage!r} on {node} does not take {what} "
                                f"(content types: {', '.join(sorted(types)) or 'none'})", detail=detail)
        return entry

    def _check_bridges(self, node: str, spec: VMSpec) -> None:
        present = {str(i.get("iface")) for i in self.client.get(f"/nodes/{node}/network", type="any_bridge") or []}
        for nic in spec.nics:
            if nic.bridge not in present:
                raise ImgbuildError(
                    f"bridge {nic.bridge} does not exist on node {node} (bridges and vnets there: "
                    f"{', '.join(sorted(present)) or 'none'})",
                    detail="set network.bridge in the recipe to one of them, or create it on the node; the token "
                           f"only sees bridges it may use (SDN.Use on /sdn/zones/localnetwork/{nic.bridge})")

    def _job_node(self) -> str:
        """The node of the job running in this thread: chosen by preflight, else the pinned one, else (no
        preflight: a lone call) the only node, or the online node with the most free memory."""
        node = getattr(self._job, "node", None) or self.node
        if node:
            return str(node)
        if self._default_node is None:
            view = ClusterView.parse(self.client.get("/cluster/resources", type="node") or [])
            if len(view.online) == 1:
                self._default_node = view.online[0]
            else:
                placement = choose_node(view.nodes, 0, RESERVATIONS.on(self.config.url))
                if placement.node is None:
                    raise ImgbuildError(f"no online node on {self.name}: {placement.reason}")
                self._default_node = placement.node
        return self._default_node

    def _is_shared(self, storage: str, node: str) -> bool:
        return bool(int(self._node_storages(node).get(storage, {}).get("shared") or 0))

    # --- artifacts -------------------------------------------------------------------------------
    def _storage_for(self, kind: ArtifactKind, node: str) -> tuple[str, str, str]:
        """(storage, content type, file suffix) for an artifact kind, checked against the storage."""
        if kind == "iso":
            storage, content, suffix, setting = self.config.iso_storage, "iso", ".iso", "iso_storage"
        else:
            storage, content, suffix, setting = self.config.image_storage, "import", ".qcow2", "import_storage"
        self._storage_content(storage, content, node, setting)
        return storage, content, suffix

    def stage(self, path: Path, kind: ArtifactKind, *, label: str, progress: Progress = NullProgress()) -> Staged:
        path = Path(path)
        if not path.is_file():
            raise ImgbuildError(f"cannot upload {path}: no such file")
        node = self._job_node()
        storage, content, suffix = self._storage_for(kind, node)
        if kind == "image" and (path.suffix != ".qcow2" or qcow2.virtual_size(path) is None):
            raise ImgbuildError(f"{path}: golden images are uploaded as qcow2 files")
        size = path.stat().st_size
        where = "" if self._is_shared(storage, node) else node  # a shared storage: one copy for every node
        uploader = Uploader(self.client, node, sleep=self._sleep)
        progress.step(f"hashing {path.name}")
        digest = cached_sha256(path)
        good, bad = uploader.find_existing(storage, content, digest, suffix, size)
        if good is not None:
            progress.step(f"{good} already on {node if where else storage}: not uploading")
            return Staged(kind, good, digest, size, uploaded=False, location=where)
        for volid in bad:  # same hash, wrong size: never trusted, replaced
            progress.note(f"removing {volid}: its size does not match the local file")
            uploader.delete(volid, what=f"removal of {volid}")
        filename = upload_name(label, digest, suffix)
        try:
            volid = uploader.upload(path, storage=storage, content=content, filename=filename, sha256=digest,
                                    label=f"upload {filename}" + (f" to {node}" if where else ""), progress=progress)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM: an ISO (a seed holds a private key) must not stay
            if kind == "iso":
                self._remove_interrupted_upload(f"{storage}:{content}/{filename}", node, where)
            raise
        if kind == "image":  # VMs hold copies of imported images, never the upload: older versions are dead weight
            for old in uploader.superseded(storage, content, label, digest, suffix):
                progress.note(f"removing {old}: an older golden image, superseded by {filename}")
                uploader.delete(old, what=f"removal of {old}")
        return Staged(kind, volid, digest, size, uploaded=True, location=where)

    def _remove_interrupted_upload(self, volid: str, node: str, where: str) -> None:
        """PVE keeps an upload whose body arrived even when the client is gone (its import task runs on):
        wait for that task, then delete the file. A body cut short is discarded by PVE itself."""
        try:
            for task in self.client.get(f"/nodes/{node}/tasks", source="active", typefilter="imgcopy") or []:
                if task.get("type") == "imgcopy" and task.get("upid"):
                    self.client.wait_task(str(task["upid"]), timeout=self._wait(CONFIG_TIMEOUT),
                                          what="an interrupted upload's import")
            self.unstage(Staged("iso", volid, "", 0, location=where or node))
        except ImgbuildError as exc:
            log.warning("could not remove the interrupted upload %s: %s", volid, exc.message)

    def staged_copy(self, path: Path, kind: ArtifactKind, *, label: str) -> Staged | None:
        path = Path(path)
        if not path.is_file():
            return None
        node = self._job_node()
        storage, content, suffix = self._storage_for(kind, node)
        digest = cached_sha256(path)
        size = path.stat().st_size
        good, _ = Uploader(self.client, node, sleep=self._sleep).find_existing(storage, content, digest, suffix, size)
        where = "" if self._is_shared(storage, node) else node
        return Staged(kind, good, digest, size, location=where) if good is not None else None

    def unstage(self, staged: Staged) -> None:
        volid = staged.ref
        storage, _, volname = volid.partition(":")
        content = volname.split("/", 1)[0]
        node = staged.location or self._job_node()
        listed = self.client.get(f"/nodes/{node}/storage/{storage}/content", content=content) or []
        if not any(e.get("volid") == volid for e in listed):
            return
        self.client.run("DELETE", volume_path(node, volid), what=f"removal of {volid}" + (
            f" from {node}" if staged.location else ""), wait=self._wait(CONFIG_TIMEOUT))

    # --- lifecycle -------------------------------------------------------------------------------
    def _vm(self, name: str, vmid: int, node: str, **data: Any) -> VM:
        return VM(name=name, target=self.name, ident=str(vmid), data={"vmid": vmid, "node": node, **data})

    def _vmid(self, vm: VM) -> int:
        return int(vm.data.get("vmid") or vm.ident)

    def _node_of(self, vm: VM) -> str:
        node = vm.data.get("node")
        if not node:  # a VM described by id only: ask the cluster where it is
            for e in self.client.get("/cluster/resources", type="vm") or []:
                if int(e.get("vmid", -1)) == self._vmid(vm):
                    node = vm.data["node"] = str(e.get("node"))
                    break
            else:
                node = self._job_node()
        return str(node)

    def _qemu(self, vm: VM | int, node: str | None = None) -> str:
        if isinstance(vm, int):
            return f"/nodes/{node or self._job_node()}/qemu/{vm}"
        return f"/nodes/{node or self._node_of(vm)}/qemu/{self._vmid(vm)}"

    def _next_vmid(self, wanted: int | None) -> int:
        if wanted is not None:
            try:
                self.client.get("/cluster/nextid", retry=False, vmid=wanted)
            except PveError as exc:
                if exc.status == 400:
                    raise ImgbuildError(f"vmid {wanted} is already in use on {self.name}") from None
                raise
            return wanted
        return int(self.client.get("/cluster/nextid"))

    def create_vm(self, spec: VMSpec, *, progress: Progress = NullProgress()) -> VM:
        vmconfig.check_name(spec.name)
        node = spec.node or self._job_node()
        network = nat.requested(spec, self.config.sdn_zone)
        if network is not None and network.sdn:
            nat.ensure(self.client, network, progress=progress, wait=self.task_timeout)
        for attempt in range(3):
            vmid = self._next_vmid(spec.vmid)
            params = vmconfig.create_params(spec, vmid=vmid, disk_storage=self.config.disk_storage)
            progress.step(f"creating VM {vmid} ({spec.name}) on {node}")
            try:
                self.client.run("POST", f"/nodes/{node}/qemu", what=f"creation of VM {vmid} ({spec.name}) on {node}",
                                wait=self.task_timeout, **params)
            except PveError as exc:
                if "already exists" in exc.reason and spec.vmid is None and attempt < 2:
                    continue  # another client took the id between nextid and create
                self._remove_failed_create(vmid, spec.name, node)
                raise
            except KeyboardInterrupt:  # Ctrl-C or SIGTERM: PVE's create task runs on; remove what it makes
                self._wait_unlocked(vmid, node)
                self._remove_failed_create(vmid, spec.name, node)
                raise
            break
        vm = self._vm(spec.name, vmid, node)
        try:
            self._grow_disks(vm, spec)
        except ImgbuildError:
            self.destroy(vm)
            raise
        return vm

    def _remove_failed_create(self, vmid: int, name: str, node: str) -> None:
        """A create that failed may still have left a config behind (e.g. an answer lost on the way)."""
        try:
            for entry in self.client.get(f"/nodes/{node}/qemu") or []:
                if int(entry.get("vmid", -1)) == vmid and entry.get("name") == name and not entry.get("lock"):
                    self.destroy(self._vm(name, vmid, node))
        except ImgbuildError as exc:
            log.warning("could not check for a half-created VM %s: %s", vmid, exc.message)

    def _grow_disks(self, vm: VM, spec: VMSpec) -> None:
        """An imported disk has the golden image's size: resize it to the recipe's."""
        if not any(d.source is not None for d in spec.disks):
            return
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        for key, disk in zip(vmconfig.disk_keys(spec.disks), spec.disks, strict=True):
            if disk.source is None or key not in config:
                continue
            current = vmconfig.drive_size_bytes(str(config[key])) or 0
            if disk.size_bytes > current:
                self.client.run("PUT", f"{self._qemu(vm)}/resize", what=f"resize of {key} of VM {vm.ident}",
                                wait=self._wait(CONFIG_TIMEOUT), disk=key, size=str(disk.size_bytes))

    def find_vm(self, name: str) -> VM | None:
        found = [e for e in self.client.get("/cluster/resources", type="vm") or []
                 if e.get("type") == "qemu" and e.get("name") == name]
        if not found:
            return None
        if len(found) > 1:
            ids = ", ".join(f"{e.get('vmid')} on {e.get('node')}" for e in found)
            raise ImgbuildError(f"more than one VM named {name} on {self.name} ({ids})",
                                detail="imgbuild manages VMs by name; rename or remove the extra ones")
        vmid, node = int(found[0]["vmid"]), str(found[0]["node"])
        config = self.client.get(f"/nodes/{node}/qemu/{vmid}/config") or {}
        return self._vm(name, vmid, node, tags=sorted(vmconfig.tags_of(config)),
                        template=bool(int(config.get("template") or 0)), inputs=vmconfig.inputs_of(config))

    def list_vms(self) -> list[VM]:
        found = [e for e in self.client.get("/cluster/resources", type="vm") or []
                 if e.get("type") == "qemu" and vmconfig.TAG in vmconfig.tags_of(e)]
        return [self._vm(str(e.get("name") or e["vmid"]), int(e["vmid"]), str(e.get("node")),
                         tags=sorted(vmconfig.tags_of(e)), template=bool(int(e.get("template") or 0)))
                for e in sorted(found, key=lambda e: (str(e.get("name")), int(e["vmid"])))]

    def _ours(self, vm: VM) -> None:
        tags = vm.data.get("tags")
        if tags is None:
            tags = sorted(vmconfig.tags_of(self.client.get(f"{self._qemu(vm)}/config") or {}))
            vm.data["tags"] = tags
        if vmconfig.TAG not in tags:
            raise ImgbuildError(f"VM {vm.ident} ({vm.name}) on {self._node_of(vm)} was not created by imgbuild "
                                f"(no tag {vmconfig.TAG!r}); refusing to change it",
                                detail="rename it, or remove it yourself if it is really unused")

    def status(self, vm: VM) -> dict[str, Any]:
        return self.client.get(f"{self._qemu(vm)}/status/current") or {}

    def start(self, vm: VM, *, progress: Progress = NullProgress()) -> None:
        if self.is_running(vm):
            return
        progress.step(f"starting VM {vm.ident} ({vm.name}) on {self._node_of(vm)}")
        self.client.run("POST", f"{self._qemu(vm)}/status/start", what=f"start of VM {vm.ident} ({vm.name})",
                        wait=self._wait(START_TIMEOUT))

    def is_running(self, vm: VM) -> bool:
        return self.status(vm).get("status") == "running"

    def wait_stopped(self, vm: VM, timeout: float, *, progress: Progress = NullProgress()) -> None:
        start = time.monotonic()
        last_note = -10.0
        while self.is_running(vm):
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise ImgbuildError(f"VM {vm.ident} ({vm.name}) did not power off within {timeout:.0f}s")
            if elapsed - last_note >= 10:
                progress.step(f"waiting for {vm.name} to power off ({elapsed:.0f}s)")
                last_note = elapsed
            self._sleep(2.0)

    def shutdown(self, vm: VM, timeout: float = 120) -> None:
        """ACPI shutdown; PVE stops the VM hard if the guest ignores it for *timeout* seconds."""
        RESERVATIONS.release(self.config.url, vm.name)
        if not self.is_running(vm):
            return
        try:
            self.client.run("POST", f"{self._qemu(vm)}/status/shutdown", what=f"shutdown of VM {vm.ident}",
                            wait=timeout + 60, timeout=int(timeout), forceStop=True)
        except PveError as exc:
            log.info("shutdown of VM %s: %s; stopping it", vm.ident, exc.message)
            self.stop(vm)

    def stop(self, vm: VM) -> None:
        if not self.is_running(vm):
            return
        self.client.run("POST", f"{self._qemu(vm)}/status/stop", what=f"stop of VM {vm.ident}",
                        wait=self._wait(STOP_TIMEOUT))

    def destroy(self, vm: VM) -> None:
        RESERVATIONS.release(self.config.url, vm.name)
        vmid = self._vmid(vm)
        node = self._node_of(vm)
        listed = {int(e.get("vmid", -1)): e for e in self.client.get(f"/nodes/{node}/qemu") or []}
        if vmid not in listed:
            return
        if listed[vmid].get("lock") == "clone":  # an interrupted clone: its task runs on
            listed[vmid] = self._wait_unlocked(vmid, node)
        self._ours(vm)
        seeds = self._seed_volumes(vm)
        if listed[vmid].get("status") == "running":
            self.client.run("POST", f"{self._qemu(vm)}/status/stop", what=f"stop of VM {vmid}",
                            wait=self._wait(STOP_TIMEOUT))
        self.client.run("DELETE", self._qemu(vm), what=f"removal of VM {vmid} ({vm.name}) on {node}",
                        wait=self.task_timeout, purge=True, **{"destroy-unreferenced-disks": True})
        for volid in seeds:  # the VM's private host key
            self.unstage(Staged("iso", volid, "", 0, location=node))

    def _wait_unlocked(self, vmid: int, node: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.task_timeout
        while True:
            entry: dict[str, Any] = next((e for e in self.client.get(f"/nodes/{node}/qemu") or []
                          if int(e.get("vmid", -1)) == vmid), {})
            if not entry.get("lock") or time.monotonic() >= deadline:
                return entry
            self._sleep(0.5)

    def _seed_volumes(self, vm: VM) -> list[str]:
        """The seed ISOs in *vm*'s drives (uploaded as ``<name>-seed-<sha256[:16]>.iso``)."""
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        pattern = re.compile(r"[^:]+:iso/" + re.escape(upload_name(f"{vm.name}-seed", "0" * 16, ".iso"))
                             .replace("0" * 16, "[0-9a-f]{16}"))
        found = []
        for key in vmconfig.CDROM_KEYS:
            file = vmconfig.parse_property_string(str(config.get(key, "")), "file").get("file") or ""
            if pattern.fullmatch(file):
                found.append(file)
        return found

    # --- media -------------------------------------------------------------------------------------
    def set_cdrom(self, vm: VM, slot: int, staged: Staged | None) -> None:
        key = vmconfig.cdrom_key(slot)
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        want = vmconfig.cdrom_value(staged)
        current = config.get(key)
        if current is not None:
            file = vmconfig.parse_property_string(str(current), "file").get("file")
            if (staged is None and file in ("none", "cdrom")) or (staged is not None and file == staged.ref):
                return
        self.client.run("POST", f"{self._qemu(vm)}/config", what=f"CD-ROM change on VM {vm.ident}",
                        wait=self._wait(CONFIG_TIMEOUT), **{key: want})

    def set_boot(self, vm: VM, order: tuple[str, ...]) -> None:
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        disks: list[str] = []
        cdroms: list[str] = []
        for key in sorted(config):
            if re.fullmatch(r"(virtio|scsi|sata|ide)\d+", key):
                media = vmconfig.parse_property_string(str(config[key]), "file").get("media")
                (cdroms if media == "cdrom" else disks).append(key)
        cd_order = [k for k in vmconfig.CDROM_KEYS if k in cdroms]
        value = vmconfig.boot_value(tuple(order), disks, cd_order)
        self.client.run("POST", f"{self._qemu(vm)}/config", what=f"boot order of VM {vm.ident}",
                        wait=self._wait(CONFIG_TIMEOUT), boot=value)

    # --- guest -----------------------------------------------------------------------------------
    def guest_addresses(self, vm: VM, timeout: float) -> list[str]:
        path = f"{self._qemu(vm)}/agent/network-get-interfaces"
        deadline = time.monotonic() + timeout
        reason = "no answer yet"
        while True:
            try:
                answer = self.client.get(path, retry=False) or {}
                addresses = usable_addresses(answer.get("result") or [])
                if addresses:
                    return addresses
                reason = "the agent reports no address yet"
            except PveError as exc:
                if "No QEMU guest agent configured" in exc.reason:
                    raise ImgbuildError(f"VM {vm.ident} ({vm.name}) has no guest agent configured") from None
                if "not running" in exc.reason and "agent" not in exc.reason:
                    raise ImgbuildError(f"VM {vm.ident} ({vm.name}) stopped while waiting for its address") from None
                if exc.status == 401 or exc.status == 403 or (exc.status == 0 and "TLS" in exc.message):
                    raise
                reason = exc.reason or exc.message
            if time.monotonic() >= deadline:
                raise ImgbuildError(
                    f"no address from the guest agent of VM {vm.ident} ({vm.name}) within {timeout:.0f}s: {reason}",
                    detail="is qemu-guest-agent installed and started in the guest?",
                )
            self._sleep(min(3.0, max(0.1, deadline - time.monotonic())))

    def endpoint(self, vm: VM, guest_address: str, port: int) -> Endpoint:
        if self.jump is None:
            return Endpoint(guest_address, port, "direct")
        local = self.jump.forward(guest_address, port)
        return Endpoint("127.0.0.1", local, f"{self.jump.describe()} to {guest_address}:{port}")

    def screenshot(self, vm: VM, dest: Path) -> Path:
        """The VM's screen through PVE's VNC console (vncproxy + vncwebsocket, screen.py): PVE has no
        screendump call. Needs VM.Console on the VM."""
        if not self.is_running(vm):
            raise ImgbuildError(f"VM {vm.ident} ({vm.name}) is not running: no screen to capture")
        return screen.screenshot(self.client, self._qemu(vm), dest)

    def console_log(self, vm: VM) -> Path | None:
        return None

    # --- golden images ---------------------------------------------------------------------------
    def make_template(self, vm: VM) -> None:
        if self.is_running(vm):
            raise ImgbuildError(f"VM {vm.ident} ({vm.name}) is running; shut it down before making it a template")
        self._ours(vm)
        self.client.run("POST", f"{self._qemu(vm)}/template", what=f"conversion of VM {vm.ident} to a template",
                        wait=self.task_timeout)
        vm.data["template"] = True

    def clone_mac(self, name: str) -> str:
        """The MAC address a clone called *name* gets (known before cloning, so its seed can match it)."""
        return derived_mac(name)

    def clone(self, vm: VM, name: str, *, full: bool = True, seed: Staged | None = None,
              network: GuestNetwork | None = None) -> VM:
        vmconfig.check_name(name)
        if self.find_vm(name) is not None:
            raise ImgbuildError(f"a VM named {name} already exists on {self.name}",
                                detail=f"remove it with: imgbuild destroy {name} --target {self.name}")
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        template = bool(int(config.get("template") or 0))
        if not full and not template:
            raise ImgbuildError(f"a linked clone needs a template; {vm.name} is not one",
                                detail=f"convert it first: imgbuild template {vm.name} --target {self.name}")
        if self.is_running(vm):
            raise ImgbuildError(f"VM {vm.ident} ({vm.name}) is running; clone a stopped VM or a template")
        home = self._node_of(vm)
        node = str(getattr(self._job, "node", None) or home)  # preflight's choice, else beside the template
        newid = self._next_vmid(None)
        params: dict[str, Any] = {"newid": newid, "name": name, "full": full}
        if node != home:
            # qemu-server clone_vm: another node only from shared storage, and a 'storage' given must be
            # shared too; without one the clone's disks stay on the template's (shared) storage
            params["target"] = node
        if full and (node == home or self._is_shared(self.config.disk_storage, home)):
            params["storage"] = self.config.disk_storage
        self.client.run("POST", f"{self._qemu(vm)}/clone",
                        what=f"{'full' if full else 'linked'} clone of VM {vm.ident} as {newid} ({name})"
                             + (f" on {node}" if node != home else ""),
                        wait=self.task_timeout, **params)
        clone = self._vm(name, newid, node, tags=[vmconfig.TAG], template=False)
        try:
            changes: dict[str, str] = {}
            new_config = self.client.get(f"{self._qemu(clone)}/config") or {}
            if "net0" in new_config:
                changes["net0"] = vmconfig.with_mac(str(new_config["net0"]), self.clone_mac(name))
            changes[vmconfig.cdrom_key(0)] = vmconfig.cdrom_value(seed)
            if set(vmconfig.tags_of(new_config)) != {vmconfig.TAG}:
                changes["tags"] = vmconfig.TAG  # a clone of a release is no release: its labels stay behind
            if network is not None and network.mode == "static" and network.address:
                changes["ipconfig0"] = vmconfig.ipconfig_value(network.address, network.gateway)  # its own address
            elif network is not None and "ipconfig0" in new_config:
                changes["delete"] = "ipconfig0"
            self.client.run("POST", f"{self._qemu(clone)}/config", what=f"configuration of clone {newid} ({name})",
                            wait=self._wait(CONFIG_TIMEOUT), **changes)
        except ImgbuildError:
            self.destroy(clone)
            raise
        return clone

    # --- releases --------------------------------------------------------------------------------
    def labels(self, vm: VM) -> frozenset[str]:
        tags = vm.data.get("tags")
        if tags is None:
            tags = sorted(vmconfig.tags_of(self.client.get(f"{self._qemu(vm)}/config") or {}))
            vm.data["tags"] = tags
        return frozenset(tags) - {vmconfig.TAG}

    def set_labels(self, vm: VM, labels: Iterable[str]) -> None:
        """One config write: PVE replaces the whole tag list, so the labels move in one step."""
        self._ours(vm)
        value = vmconfig.tags_value(set(labels))
        self.client.run("POST", f"{self._qemu(vm)}/config", what=f"tags of VM {vm.ident} ({vm.name})",
                        wait=self._wait(CONFIG_TIMEOUT), tags=value)
        vm.data["tags"] = sorted(value.split(";"))

    def dependents(self, vm: VM) -> list[str]:
        """VMs with a disk on one of *vm*'s base volumes (linked clones: ``base-VMID-disk-N/vm-...``)."""
        vmid = self._vmid(vm)
        marker = f"base-{vmid}-disk-"
        holders = []
        for entry in self.client.get("/cluster/resources", type="vm") or []:
            if entry.get("type") != "qemu" or int(entry.get("vmid", -1)) == vmid or not entry.get("node"):
                continue
            config = self.client.get(f"/nodes/{entry['node']}/qemu/{entry['vmid']}/config") or {}
            if any(re.fullmatch(r"(virtio|scsi|sata|ide|efidisk|tpmstate)\d+", k) and marker in str(v)
                   for k, v in config.items()):
                holders.append(str(entry.get("name") or entry["vmid"]))
        return sorted(holders)

    def store_manifest(self, vm: VM, manifest: str) -> str:
        config = self.client.get(f"{self._qemu(vm)}/config") or {}
        description, whole = vmconfig.with_manifest(str(config.get("description") or ""), manifest)
        self.client.run("POST", f"{self._qemu(vm)}/config", what=f"manifest of VM {vm.ident} ({vm.name})",
                        wait=self._wait(CONFIG_TIMEOUT), description=description)
        if whole:
            return f"the description of VM {vm.ident} on {self.name}"
        return (f"its sha256 in the description of VM {vm.ident} on {self.name} (the manifest is too large for "
                "PVE's 8 KiB description; the build machine keeps it in OUT/RELEASE/release-manifest.json)")

    def read_manifest(self, vm: VM) -> str | None:
        return vmconfig.manifest_in(self.client.get(f"{self._qemu(vm)}/config") or {})
