"""Simulated storages: ``local`` (dir) and ``local-lvm`` (LVM-thin) on each node, ``shared`` (NFS) in a cluster.

Volumes are real files under the simulator's data directory, so a QEMU backend can boot them:
ISOs and import images as uploaded; VM disks as qcow2 files whatever format PVE would report
(blank ones from ``qemu-img create``), copies of the imported image (``import-from``), or qcow2
overlays on a template's base disk (linked clones). A node-local storage holds its own volumes on
each node; a shared one holds one set that every node sees (pve-storage's ``shared`` flag).
"""

from __future__ import annotations

import re
import shutil
import struct
import time
from dataclasses import dataclass, field
from pathlib import Path

from builder.proc import run


@dataclass
class Volume:
    volid: str
    storage: str
    volname: str
    path: Path
    content: str  # iso, import, images, vztmpl
    format: str  # as PVE reports it: iso, qcow2, raw ...
    disk_format: str  # what is really in the file (qcow2 or raw), for QEMU
    size: int  # virtual size in bytes
    ctime: int = field(default_factory=lambda: int(time.time()))
    vmid: int | None = None
    base: str | None = None  # linked clone: volid of the base volume
    scope: str = ""  # the node holding it ("" on shared storage: every node sees the same volume)


@dataclass
class StorageDef:
    """One entry of storage.cfg (cluster-wide): *nodes* restricts it to some nodes (None: all);
    *shared* says every node sees the same volumes (NFS, Ceph ...) instead of its own."""

    id: str
    type: str  # dir, lvmthin, nfs
    content: tuple[str, ...]
    shared: bool = False
    nodes: tuple[str, ...] | None = None
    total: int = 500 << 30

    @property
    def has_path(self) -> bool:  # PVE: only storages with a path accept uploads
        return self.type in ("dir", "nfs")

    @property
    def subdirs(self) -> dict[str, str]:
        return {"iso": "template/iso", "vztmpl": "template/cache", "import": "import", "snippets": "snippets"}


def qcow2_virtual_size(path: Path) -> int | None:
    with open(path, "rb") as fh:
        head = fh.read(32)
    if len(head) < 32 or head[:4] != b"QFI\xfb":
        return None
    return int(struct.unpack(">Q", head[24:32])[0])


def image_info(path: Path, fmt: str) -> tuple[str, int]:
    """(on-disk format, virtual size) of an uploaded import image; raises ValueError if it lies."""
    if fmt == "qcow2":
        size = qcow2_virtual_size(path)
        if size is None:
            raise ValueError(f"file '{path.name}' is not a valid qcow2 image")
        return "qcow2", size
    if fmt == "vmdk":
        with open(path, "rb") as fh:
            if fh.read(4) != b"KDMV":
                raise ValueError(f"file '{path.name}' is not a valid vmdk image")
        return "vmdk", path.stat().st_size
    return "raw", path.stat().st_size


def default_storages(*, cluster: bool, import_content: bool = True) -> list[StorageDef]:
    """``local`` (dir) and ``local-lvm`` (LVM-thin) on every node, as a PVE installation makes them; a
    cluster also gets ``shared`` (NFS, shared: disk images, ISOs and import images for every node)."""
    local_content = ("iso", "vztmpl", "backup", "snippets") + (("import",) if import_content else ())
    defs = [StorageDef("local", "dir", local_content), StorageDef("local-lvm", "lvmthin", ("images", "rootdir"))]
    if cluster:
        defs.append(StorageDef("shared", "nfs", ("images", "iso", "import"), shared=True, total=2 << 40))
    return defs


class Storages:
    """Every storage of the cluster and the volumes on them, keyed by (scope, volid): a node-local storage
    has its own volumes on each node (``local:iso/x.iso`` on pve1 is not the one on pve2), a shared one
    has one set (scope "")."""

    def __init__(self, data_dir: Path, nodes: list[str], defs: list[StorageDef]) -> None:
        self.data_dir = data_dir
        self.nodes = list(nodes)
        self.defs: dict[str, StorageDef] = {d.id: d for d in defs}
        self.volumes: dict[tuple[str, str], Volume] = {}

    def get(self, storage: str) -> StorageDef | None:
        return self.defs.get(storage)

    def enabled_on(self, sdef: StorageDef, node: str) -> bool:
        # pve-storage src/PVE/Storage.pm storage_check_node: a 'nodes' list restricts the storage
        return sdef.nodes is None or node in sdef.nodes

    def scope(self, sdef: StorageDef, node: str) -> str:
        return "" if sdef.shared else node

    def root(self, sdef: StorageDef, node: str) -> Path:
        path = self.data_dir / (f"shared/{sdef.id}" if sdef.shared else f"{node}/{sdef.id}")
        path.mkdir(parents=True, exist_ok=True)
        return path

    def content_dir(self, sdef: StorageDef, node: str, content: str) -> Path:
        return self.root(sdef, node) / sdef.subdirs[content]

    def used(self, sdef: StorageDef, node: str) -> int:
        scope = self.scope(sdef, node)
        return sum(v.size for v in self.volumes.values() if v.storage == sdef.id and v.scope == scope)

    def visible(self, node: str) -> list[Volume]:
        """The volumes node *node* sees: its own on local storages, and those on shared storages."""
        return [v for v in self.volumes.values() if v.scope in ("", node)]

    def volume(self, node: str, volid: str) -> Volume | None:
        storage = volid.split(":", 1)[0]
        sdef = self.defs.get(storage)
        if sdef is None:
            return None
        return self.volumes.get((self.scope(sdef, node), volid))

    def _add(self, vol: Volume) -> Volume:
        self.volumes[(vol.scope, vol.volid)] = vol
        return vol

    # --- files uploaded or listed ---------------------------------------------------------------
    def add_file(self, storage: StorageDef, node: str, content: str, name: str, path: Path) -> Volume:
        fmt = {"iso": "iso", "vztmpl": "tgz"}.get(content)
        disk_format = "raw"
        size = path.stat().st_size
        if content == "import":
            fmt = name.rsplit(".", 1)[-1]
            if fmt != "ova":
                disk_format, size = image_info(path, fmt)
        volname = f"{content}/{name}"
        return self._add(Volume(f"{storage.id}:{volname}", storage.id, volname, path, content, fmt or "raw",
                                disk_format, size, scope=self.scope(storage, node)))

    # --- VM disks -----------------------------------------------------------------------------
    def next_disk_name(self, storage: StorageDef, node: str, vmid: int, prefix: str = "vm") -> str:
        scope = self.scope(storage, node)
        used = {Path(v.volname).name for v in self.volumes.values() if v.storage == storage.id and v.scope == scope}
        used |= {p.name for p in self.root(storage, node).iterdir()}
        n = 0
        while f"{prefix}-{vmid}-disk-{n}" in used or f"base-{vmid}-disk-{n}" in used or f"vm-{vmid}-disk-{n}" in used:
            n += 1
        return f"{prefix}-{vmid}-disk-{n}"

    def _new_disk(self, storage: StorageDef, node: str, vmid: int, size: int, disk_format: str) -> Volume:
        name = self.next_disk_name(storage, node, vmid)
        root = self.root(storage, node)
        if storage.type in ("dir", "nfs"):
            volname = f"{vmid}/{name}.raw"
            path = root / "images" / str(vmid) / f"{name}.raw"
        else:
            volname = name
            path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        return Volume(f"{storage.id}:{volname}", storage.id, volname, path, "images", "raw", disk_format, size,
                      vmid=vmid, scope=self.scope(storage, node))

    def alloc_blank(self, storage: StorageDef, node: str, vmid: int, size: int) -> Volume:
        # qcow2 on disk whatever PVE reports (raw for LVM-thin): the QEMU backend boots it as is.
        vol = self._new_disk(storage, node, vmid, size, "qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(vol.path), str(size)])
        return self._add(vol)

    def alloc_copy(self, storage: StorageDef, node: str, vmid: int, source: Volume) -> Volume:
        vol = self._new_disk(storage, node, vmid, source.size, source.disk_format)
        shutil.copyfile(source.path, vol.path)
        return self._add(vol)

    def alloc_linked(self, storage: StorageDef, node: str, vmid: int, base: Volume) -> Volume:
        vol = self._new_disk(storage, node, vmid, base.size, "qcow2")
        vol.volname = f"{base.volname}/{vol.volname}"
        vol.volid = f"{storage.id}:{vol.volname}"
        vol.base = base.volid
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base.disk_format, "-b", str(base.path), str(vol.path)])
        return self._add(vol)

    def resize(self, vol: Volume, size: int) -> None:
        if vol.disk_format == "raw":
            with open(vol.path, "r+b") as fh:
                fh.truncate(size)
        else:
            run(["qemu-img", "resize", "-q", "-f", vol.disk_format, str(vol.path), str(size)])
        vol.size = size

    def make_base(self, vol: Volume) -> Volume:
        """Template conversion: vm-N-disk-M becomes base-N-disk-M (read-only base for clones)."""
        new_name = re.sub(r"(^|/)vm-(\d+-disk-\d+)", r"\1base-\2", vol.volname)
        if new_name == vol.volname:
            return vol
        new_path = vol.path.with_name(re.sub(r"^vm-", "base-", vol.path.name))
        vol.path.rename(new_path)
        del self.volumes[(vol.scope, vol.volid)]
        vol.volname, vol.path = new_name, new_path
        vol.volid = f"{vol.storage}:{new_name}"
        return self._add(vol)

    def free(self, vol: Volume) -> bool:
        if self.volumes.pop((vol.scope, vol.volid), None) is None:
            return False
        vol.path.unlink(missing_ok=True)
        return True

    def clones_of(self, vol: Volume) -> list[Volume]:
        return [v for v in self.volumes.values() if v.base == vol.volid and v.scope == vol.scope]
