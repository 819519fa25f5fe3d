"""What makes two builds from the same packages byte-identical: one timestamp derived from the installed
packages (SOURCE_DATE_EPOCH), file times clamped to it, and identifiers derived from the image's content key
instead of drawn at random.

The timestamp is the newest Debian changelog entry among the installed packages: it moves only when a
package does (the Release file's Date moves every day, the build time every build). Identifiers (filesystem
UUID and hash seed, MBR label id, ESP serial) come from the image key, which is a hash of the spec and the
builder version: stable across builds of one spec, different between specs.
"""

from __future__ import annotations

import email.utils
import gzip
import hashlib
import os
import re
import uuid
from collections.abc import Iterable
from pathlib import Path

from builder.errors import ImgbuildError
from builder.image.manifest import Package

# mmdebstrap runs with this SOURCE_DATE_EPOCH: the installed packages (and so their changelogs) are only known
# once it finishes. It switches mmdebstrap and the maintainer scripts' tools into their reproducible modes
# (no logs or ldconfig cache left, shadow's password-change day, Python's hash-checked .pyc files). Two
# bootstraps with different values differ only in /etc/shadow (set to the image's day afterwards:
# configure.set_password_change_day) and in the times inside the initramfs, which mkinitramfs clamps to this
# constant (measured by bootstrapping trixie three times: two runs with one value were identical apart
# from file times and the host keys imgbuild removes).
BOOTSTRAP_EPOCH = 1704067200  # 2024-01-01T00:00:00Z

_TRAILER = re.compile(rb"^ -- .*>  (.+)$", re.MULTILINE)


def changelog_date(path: Path) -> int | None:
    """Seconds since the epoch of the newest entry of a Debian changelog (gzip), or None if it has none."""
    try:
        with gzip.open(path) as fh:
            head = fh.read(64 * 1024)
    except (OSError, EOFError):
        return None
    match = _TRAILER.search(head)
    if not match:
        return None
    try:
        return int(email.utils.parsedate_to_datetime(match.group(1).decode("utf-8", "replace").strip()).timestamp())
    except (TypeError, ValueError):
        return None


def changelogs(root: Path, package: str) -> list[Path]:
    """The Debian changelogs of an installed package: changelog.Debian.gz and a binNMU's changelog.Debian.ARCH.gz,
    or changelog.gz for a native package (which has no separate Debian changelog)."""
    doc = root / "usr/share/doc" / package
    found = sorted(doc.glob("changelog.Debian*.gz"))
    return found or [p for p in (doc / "changelog.gz",) if p.exists()]


def source_date_epoch(root: Path, packages: Iterable[Package]) -> int:
    """The newest changelog entry among the packages installed in *root*."""
    dates = [d for p in packages for log in changelogs(root, p.name) if (d := changelog_date(log)) is not None]
    if not dates:
        raise ImgbuildError(f"no Debian changelog with a date under {root / 'usr/share/doc'}: "
                            "cannot derive the image's timestamp")
    return max(dates)


def clamp_times(root: Path, epoch: int) -> int:
    """Set every file's access and modification time under *root* to at most *epoch* (a file from a package
    keeps its packaged time; one written by the build gets *epoch*), and access time to the modification time.
    Returns how many paths were changed."""
    changed = 0
    for dirpath, dirnames, filenames in os.walk(root):
        for name in (*dirnames, *filenames):
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            mtime = min(int(st.st_mtime), epoch)
            if st.st_mtime_ns != mtime * 10**9 or st.st_atime_ns != mtime * 10**9:
                os.utime(path, (mtime, mtime), follow_symlinks=False)
                changed += 1
    st = os.lstat(root)
    os.utime(root, (min(int(st.st_mtime), epoch),) * 2)
    return changed


def _digest(key: str, purpose: str) -> bytes:
    return hashlib.sha256(f"imgbuild:{purpose}:{key}".encode()).digest()


def derived_uuid(key: str, purpose: str) -> str:
    """A UUID (random-looking, version 4 layout) that is the same for every build of image *key*."""
    return str(uuid.UUID(bytes=_digest(key, purpose)[:16], version=4))


def mbr_label_id(key: str) -> str:
    """The MBR disk signature (sfdisk's label-id) for image *key*: 0x followed by 8 hex digits, never zero."""
    value = int.from_bytes(_digest(key, "mbr-label-id")[:4], "big") or 1
    return f"0x{value:08x}"


def esp_serial(key: str) -> str:
    """The FAT volume serial of an EFI system partition, as "ABCD-1234"."""
    raw = _digest(key, "esp-serial")[:4].hex().upper()
    return f"{raw[:4]}-{raw[4:]}"
