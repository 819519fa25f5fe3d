"""Simulated storages: a directory storage ``local`` and an LVM-thin-like ``local-lvm``.

Volumes are real files under the simulator's data directory, so a QEMU backend can boot them:
ISOs and import images as uploaded; VM disks as qcow2 files whatever format PVE would report
(blank ones from ``qemu-img create``), copies of the imported image (``import-from``), or qcow2
overlays on a template's base disk (linked clones).
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


@dataclass
class StorageDef:
    id: str
    type: str  # dir or lvmthin
    content: tuple[str, ...]
    root: Path
    total: int = 500 << 30

    @property
    def has_path(self) -> bool:  # PVE: only storages with a path accept uploads
        return self.type == "dir"

    def content_dir(self, content: str) -> Path:
        sub = {"iso": "template/iso", "vztmpl": "template/cache", "import": "import", "snippets": "snippets"}[content]
        return self.root / sub


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


class Storages:
    """All storages of the node and the volumes on them (keyed by volid)."""

    def __init__(self, data_dir: Path, *, import_content: bool = True) -> None:
        local_content = ("iso", "vztmpl", "backup", "snippets") + (("import",) if import_content else ())
        self.defs: dict[str, StorageDef] = {
            "local": StorageDef("local", "dir", local_content, data_dir / "local"),
            "local-lvm": StorageDef("local-lvm", "lvmthin", ("images", "rootdir"), data_dir / "local-lvm"),
        }
        for d in self.defs.values():
            d.root.mkdir(parents=True, exist_ok=True)
        self.volumes: dict[str, Volume] = {}

    def get(self, storage: str) -> StorageDef | None:
        return self.defs.get(storage)

    def used(self, storage: str) -> int:
        return sum(v.size for v in self.volumes.values() if v.storage == storage)

    # --- files uploaded or listed ---------------------------------------------------------------
    def add_file(self, storage: StorageDef, content: str, name: str, path: Path) -> Volume:
        fmt = {"iso": "iso", "vztmpl": "tgz"}.get(content)
        disk_format = "raw"
        size = path.stat().st_size
        if content == "import":
            fmt = name.rsplit(".", 1)[-1]
            if fmt != "ova":
                disk_format, size = image_info(path, fmt)
        volname = f"{content}/{name}"
        vol = Volume(f"{storage.id}:{volname}", storage.id, volname, path, content, fmt or "raw", disk_format, size)
        self.volumes[vol.volid] = vol
        return vol

    # --- VM disks -----------------------------------------------------------------------------
    def next_disk_name(self, storage: StorageDef, vmid: int, prefix: str = "vm") -> str:
        used = {Path(v.volname).name for v in self.volumes.values() if v.storage == storage.id}
        used |= {p.name for p in storage.root.iterdir()}
        n = 0
        while f"{prefix}-{vmid}-disk-{n}" in used or f"base-{vmid}-disk-{n}" in used or f"vm-{vmid}-disk-{n}" in used:
            n += 1
        return f"{prefix}-{vmid}-disk-{n}"

    def _new_disk(self, storage: StorageDef, vmid: int, size: int, disk_format: str) -> Volume:
        name = self.next_disk_name(storage, vmid)
        if storage.type == "dir":
            volname = f"{vmid}/{name}.raw"
            path = storage.root / "images" / str(vmid) / f"{name}.raw"
        else:
            volname = name
            path = storage.root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        vol = Volume(f"{storage.id}:{volname}", storage.id, volname, path, "images", "raw", disk_format, size, vmid=vmid)
        return vol

    def alloc_blank(self, storage: StorageDef, vmid: int, size: int) -> Volume:
        # qcow2 on disk whatever PVE reports (raw for LVM-thin): the QEMU backend boots it as is.
        vol = self._new_disk(storage, vmid, size, "qcow2")
        run(["qemu-img", "create", "-q", "-f", "qcow2", str(vol.path), str(size)])
        self.volumes[vol.volid] = vol
        return vol

    def alloc_copy(self, storage: StorageDef, vmid: int, source: Volume) -> Volume:
        vol = self._new_disk(storage, vmid, source.size, source.disk_format)
        shutil.copyfile(source.path, vol.path)
        self.volumes[vol.volid] = vol
        return vol

    def alloc_linked(self, storage: StorageDef, vmid: int, base: Volume) -> Volume:
        vol = self._new_disk(storage, vmid, base.size, "qcow2")
        vol.volname = f"{base.volname}/{vol.volname}"
        vol.volid = f"{storage.id}:{vol.volname}"
        vol.base = base.volid
        run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", base.disk_format, "-b", str(base.path), str(vol.path)])
        self.volumes[vol.volid] = vol
        return vol

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
        del self.volumes[vol.volid]
        vol.volname, vol.path = new_name, new_path
        vol.volid = f"{vol.storage}:{new_name}"
        self.volumes[vol.volid] = vol
        return vol

    def free(self, volid: str) -> bool:
        vol = self.volumes.pop(volid, None)
        if vol is None:
            return False
        vol.path.unlink(missing_ok=True)
        return True

    def clones_of(self, volid: str) -> list[Volume]:
        return [v for v in self.volumes.values() if v.base == volid]
