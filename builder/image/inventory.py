"""What the cache holds: golden images (with the spec each was built from) and the other areas' sizes.

Removing a cached image never harms a VM: the local target stages hard links and PVE holds uploaded
copies, so the only cost is building the image again when a recipe asks for it.
"""

from __future__ import annotations

import fcntl
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.cachedir import cache_dir, cache_root
from builder.image.build import lock_path
from builder.image.manifest import manifest_path


@dataclass(frozen=True)
class CachedImage:
    path: Path
    size: int  # bytes on disk
    built: str | None  # from the manifest written beside the image
    spec: dict[str, Any]


def disk_usage(path: Path) -> int:
    """Bytes *path* occupies on disk (a file, or a tree walked without following links)."""
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_blocks * 512 if path.exists() else 0
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_blocks * 512
            except FileNotFoundError:
                pass
    return total


def cached_images() -> list[CachedImage]:
    images = []
    for qcow in sorted(cache_dir("images").glob("*.qcow2")):
        try:
            manifest = json.loads(qcow.with_suffix(".json").read_text())
        except (OSError, ValueError):
            manifest = {}
        images.append(CachedImage(qcow, disk_usage(qcow), manifest.get("built"), manifest.get("spec") or {}))
    return images


def other_areas() -> dict[str, int]:
    """Sizes of everything in the cache except golden images (downloads, apt archives, kept kernels...)."""
    root = cache_root()
    if not root.is_dir():
        return {}
    return {entry.name: disk_usage(entry) for entry in sorted(root.iterdir()) if entry.name != "images"}


def remove_image(image: CachedImage) -> bool:
    """Remove a cached image and its manifest; False (nothing removed) while a build of it is running."""
    lock = lock_path(image.path)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        image.path.unlink(missing_ok=True)  # first: without the qcow2 nothing trusts the manifest
        image.path.with_suffix(".json").unlink(missing_ok=True)
        manifest_path(image.path).unlink(missing_ok=True)
        return True  # the empty lock file stays: a build waiting on it must lock the same file
    finally:
        os.close(fd)
