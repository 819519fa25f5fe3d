"""The Proxmox VE target: VMs on one PVE node, driven through its API with an API token.

Artifacts are uploaded to storages under content-addressed names (``upload.py``); VMs are created
from a VMSpec (``vmconfig.py``) with a virtio disk imported from the golden image or blank, the seed
(and installer) ISOs as IDE CD-ROMs, a virtio NIC on the recipe's bridge; every task is awaited and
checked (``client.py``). A VM's ident is its vmid. VMs imgbuild created carry the tag ``imgbuild``;
others are never replaced or destroyed. Guests are reached at the address their agent reports,
directly or through an SSH jump host (``jump.py``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder import qcow2
from builder.cachedir import cached_sha256
from builder.errors import ImgbuildError, InvalidInput
from builder.progress import NullProgress, Progress
from builder.recipe.model import derived_mac
from builder.targets.base import VM, ArtifactKind, Endpoint, GuestNetwork, Staged, Target, VMSpec
from builder.targets.local.agent import usable_addresses
from builder.targets.pve import vmconfig
from builder.targets.pve.client import PveClient, PveError, volume_path
from builder.targets.pve.jump import JumpHost
from builder.targets.pve.upload import Uploader, upload_name

log = logging.getLogger(__name__)

START_TIMEOUT = 300.0
STOP_TIMEOUT = 120.0
CONFIG_TIMEOUT = 120.0


class PveTarget(Target):
    def __init__(self, client: PveClient, *, jump: JumpHost | None = None,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.config = client.config
        self.name = self.config.name
        self.node = self.config.node
        self.jump = jump
        self.uploader = Uploader(client, self.node, sleep=sleep)
        self._sleep = sleep
        self._content_types: dict[str, set[str]] = {}

    @property
    def task_timeout(self) -> float:
        return self.config.task_timeout

    def _wait(self, usual: float) -> float:
        """How long to wait for a quick task: its usual bound, or less when the target sets a shorter one."""
        return min(usual, self.task_timeout)

    def check_connection(self) -> dict[str, Any]:
        """The node's version; fails early with a clear error on a bad URL, certificate or token."""
        version = self.client.get("/version") or {}
        nodes = [n.get("node") for n in self.client.get("/nodes") or []]
        if self.node not in nodes:
            raise InvalidInput(f"Proxmox VE at {self.config.url} has no node {self.node!r} "
                               f"(nodes: {', '.join(map(str, nodes)) or 'none'})",
                               detail=f"set node in {self.config.source}")
        return version

    def close(self) -> None:
        if self.jump is not None:
            self.jump.close()

    # --- artifacts -------------------------------------------------------------------------------
    def _storage_for(self, kind: ArtifactKind) -> tuple[str, str, str]:
        """(storage, content type, file suffix) for an artifact kind, checked against the storage."""
        if kind == "iso":
            storage, content, suffix = self.config.iso_storage, "iso", ".iso"
        else:
            storage, content, suffix = self.config.image_storage, "import", ".qcow2"
        types = self._content_types.get(storage)
        if types is None:
            types = self._content_types[storage] = self.uploader.storage_content_types(storage)
        if content not in types:
            if content == "import":
                raise ImgbuildError(
                    f"storage {storage!r} on {self.node} does not take disk images for import "
                    f"(content types: {', '.join(sorted(types)) or 'none'})",
                    detail="golden images are uploaded with content type 'import' (Proxmox VE 8.2 or later): "
                           f"enable it with `pvesm set {storage} --content {','.join(sorted(types | {'import'}))}` "
                           "or choose another storage with import_storage / PROXMOX_IMPORT_STORAGE; "
                           "or use --method installer",
                )
            raise ImgbuildError(f"storage {storage!r} on {self.node} does not hold ISO images "
                                f"(content types: {', '.join(sorted(types)) or 'none'})",
                                detail="choose another storage with iso_storage / PROXMOX_ISO_STORAGE")
        return storage, content, suffix

    def stage(self, path: Path, kind: ArtifactKind, *, label: str, progress: Progress = NullProgress()) -> Staged:
        path = Path(path)
        if not path.is_file():
            raise ImgbuildError(f"cannot upload {path}: no such file")
        storage, content, suffix = self._storage_for(kind)
        if kind == "image" and (path.suffix != ".qcow2" or qcow2.virtual_size(path) is None):
            raise ImgbuildError(f"{path}: golden images are uploaded as qcow2 files")
        size = path.stat().st_size
        progress.step(f"hashing {path.name}")
        digest = cached_sha256(path)
        good, bad = self.uploader.find_existing(storage, content, digest, suffix, size)
        if good is not None:
            progress.step(f"{good} already on {self.name}: not uploading")
            return Staged(kind, good, digest, size, uploaded=False)
        for volid in bad:  # same hash, wrong size: never trusted, replaced
            progress.note(f"removing {volid}: its size does not match the local file")
            self.uploader.delete(volid, what=f"removal of {volid}")
        filename = upload_name(label, digest, suffix)
        volid = self.uploader.upload(path, storage=storage, content=content, filename=filename, sha256=digest,
                                     label=f"upload {filename}", progress=progress)
        if kind == "image":  # VMs hold copies of imported images, never the upload: older versions are dead weight
            for old in self.uploader.superseded(storage, content, label, digest, suffix):
                progress.note(f"removing {old}: an older golden image, superseded by {filename}")
                self.uploader.delete(old, what=f"removal of {old}")
        return Staged(kind, volid, digest, size, uploaded=True)

    def unstage(self, staged: Staged) -> None:
        volid = staged.ref
        storage, _, volname = volid.partition(":")
        content = volname.split("/", 1)[0]
        listed = self.client.get(f"/nodes/{self.node}/storage/{storage}/content", content=content) or []
        if not any(e.get("volid") == volid for e in listed):
            return
        self.client.run("DELETE", volume_path(self.node, volid), what=f"removal of {volid}",
                        wait=self._wait(CONFIG_TIMEOUT))

    # --- lifecycle -------------------------------------------------------------------------------
    def _vm(self, name: str, vmid: int, **data: Any) -> VM:
        return VM(name=name, target=self.name, ident=str(vmid), data={"vmid": vmid, "node": self.node, **data})

    def _vmid(self, vm: VM) -> int:
        return int(vm.data.get("vmid") or vm.ident)

    def _qemu(self, vm: VM | int) -> str:
        vmid = vm if isinstance(vm, int) else self._vmid(vm)
        return f"/nodes/{self.node}/qemu/{vmid}"

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
        for attempt in range(3):
            vmid = self._next_vmid(spec.vmid)
            params = vmconfig.create_params(spec, vmid=vmid, disk_storage=self.config.disk_storage)
            progress.step(f"creating VM {vmid} ({spec.name}) on {self.node}")
            try:
                self.client.run("POST", f"/nodes/{self.node}/qemu", what=f"creation of VM {vmid} ({spec.name})",
                                wait=self.task_timeout, **params)
            except PveError as exc:
                if "already exists" in exc.reason and spec.vmid is None and attempt < 2:
                    continue  # another client took the id between nextid and create
                self._remove_failed_create(vmid, spec.name)
                raise
            break
        vm = self._vm(spec.name, vmid)
        try:
            self._grow_disks(vm, spec)
        except ImgbuildError:
            self.destroy(vm)
            raise
        return vm

    def _remove_failed_create(self, vmid: int, name: str) -> None:
        """A create that failed may still have left a config behind (e.g. an answer lost on the way)."""
        try:
            for entry in self.client.get(f"/nodes/{self.node}/qemu") or []:
                if int(entry.get("vmid", -1)) == vmid and entry.get("name") == name and not entry.get("lock"):
                    self.destroy(self._vm(name, vmid))
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
                 if e.get("type") == "qemu" and e.get("name") == name and e.get("node", self.node) == self.node]
        if not found:
            return None
        if len(found) > 1:
            ids = ", ".join(str(e.get("vmid")) for e in found)
            raise ImgbuildError(f"more than one VM named {name} on {self.node} (vmids {ids})",
                                detail="imgbuild manages VMs by name; rename or remove the extra ones")
        vmid = int(found[0]["vmid"])
        config = self.client.get(f"{self._qemu(vmid)}/config") or {}
        return self._vm(name, vmid, tags=sorted(vmconfig.tags_of(config)),
                        template=bool(int(config.get("template") or 0)), inputs=vmconfig.inputs_of(config))

    def list_vms(self) -> list[VM]:
        found = [e for e in self.client.get("/cluster/resources", type="vm") or []
                 if e.get("type") == "qemu" and e.get("node", self.node) == self.node
                 and vmconfig.TAG in vmconfig.tags_of(e)]
        return [self._vm(str(e.get("name") or e["vmid"]), int(e["vmid"]), tags=sorted(vmconfig.tags_of(e)),
                         template=bool(int(e.get("template") or 0)))
                for e in sorted(found, key=lambda e: (str(e.get("name")), int(e["vmid"])))]

    def _ours(self, vm: VM) -> None:
        tags = vm.data.get("tags")
        if tags is None:
            tags = sorted(vmconfig.tags_of(self.client.get(f"{self._qemu(vm)}/config") or {}))
            vm.data["tags"] = tags
        if vmconfig.TAG not in tags:
            raise ImgbuildError(f"VM {vm.ident} ({vm.name}) on {self.node} was not created by imgbuild "
                                f"(no tag {vmconfig.TAG!r}); refusing to change it",
                                detail="rename it, or remove it yourself if it is really unused")

    def status(self, vm: VM) -> dict[str, Any]:
        return self.client.get(f"{self._qemu(vm)}/status/current") or {}

    def start(self, vm: VM, *, progress: Progress = NullProgress()) -> None:
        if self.is_running(vm):
            return
        progress.step(f"starting VM {vm.ident} ({vm.name}) on {self.node}")
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
        vmid = self._vmid(vm)
        listed = {int(e.get("vmid", -1)): e for e in self.client.get(f"/nodes/{self.node}/qemu") or []}
        if vmid not in listed:
            return
        self._ours(vm)
        if listed[vmid].get("status") == "running":
            self.client.run("POST", f"{self._qemu(vm)}/status/stop", what=f"stop of VM {vmid}",
                            wait=self._wait(STOP_TIMEOUT))
        self.client.run("DELETE", self._qemu(vm), what=f"removal of VM {vmid} ({vm.name})",
                        wait=self.task_timeout, purge=True, **{"destroy-unreferenced-disks": True})

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
        raise ImgbuildError(f"screenshots are not available on the Proxmox VE target {self.name}: its API has no "
                            "screendump call", detail="open the VM's console in the PVE web UI (SPICE or noVNC)")

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
        newid = self._next_vmid(None)
        params: dict[str, Any] = {"newid": newid, "name": name, "full": full}
        if full:
            params["storage"] = self.config.disk_storage
        self.client.run("POST", f"{self._qemu(vm)}/clone",
                        what=f"{'full' if full else 'linked'} clone of VM {vm.ident} as {newid} ({name})",
                        wait=self.task_timeout, **params)
        clone = self._vm(name, newid, tags=sorted(vmconfig.tags_of(config)), template=False)
        try:
            changes: dict[str, str] = {}
            new_config = self.client.get(f"{self._qemu(newid)}/config") or {}
            if "net0" in new_config:
                changes["net0"] = vmconfig.with_mac(str(new_config["net0"]), self.clone_mac(name))
            changes[vmconfig.cdrom_key(0)] = vmconfig.cdrom_value(seed)
            if network is not None and network.mode == "static" and network.address:
                changes["ipconfig0"] = vmconfig.ipconfig_value(network.address, network.gateway)  # its own address
            elif network is not None and "ipconfig0" in new_config:
                changes["delete"] = "ipconfig0"
            self.client.run("POST", f"{self._qemu(newid)}/config", what=f"configuration of clone {newid} ({name})",
                            wait=self._wait(CONFIG_TIMEOUT), **changes)
        except ImgbuildError:
            self.destroy(clone)
            raise
        return clone
