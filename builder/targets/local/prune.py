"""Which staged golden images no VM needs any more.

The local target stages a golden image as a hard link of the cached one, and VM disks are qcow2 overlays
backed by that staged file. When ``make --refresh-image`` replaces the cached image, the old staged link
becomes the only name of the old bytes: once no VM disk (template, clone) is backed by it, it is dead
weight of a gigabyte or more. These functions find such files; the target removes them.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from builder import qcow2

MAX_CHAIN = 16  # linked clone of a template of a golden image is 3; anything deeper than this is a loop


def backing_chain(disk: Path) -> list[Path]:
    """*disk* and every file below it, resolved; stops at a missing file."""
    chain: list[Path] = []
    current: Path | None = disk
    while current is not None and len(chain) < MAX_CHAIN:
        try:
            resolved = current.resolve(strict=True)
        except OSError:
            break
        if resolved in chain:
            break
        chain.append(resolved)
        current = qcow2.backing_file(resolved)
    return chain


def unused_staged_images(staging_dir: Path, disks: Iterable[Path], *, now: float, grace: float) -> list[Path]:
    """Staged qcow2 images that no disk in *disks* is backed by and that hold bytes nothing else names.

    Kept: images in some disk's backing chain; images that are still a hard link of the cache's image
    (they cost no space, and the next make stages exactly them); images written less than *grace*
    seconds ago (a copy, staged across filesystems, for a VM that another make is about to create).
    """
    if not staging_dir.is_dir():
        return []
    in_use = {p for disk in disks for p in backing_chain(disk)}
    unused = []
    for image in sorted(staging_dir.glob("*.qcow2")):
        st = image.stat()
        if image.resolve() in in_use or st.st_nlink > 1 or now - st.st_mtime < grace:
            continue
        unused.append(image)
    return unused
