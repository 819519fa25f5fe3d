"""The Debian installer's netboot kernel, initrd and GRUB EFI image, plus isolinux, from the archive.

Everything comes from packages verified through the archive's chain of checksums
(``builder.debian.Archive``): ``debian-installer-<N>-netboot-amd64`` for the installer and its signed
GRUB/shim, ``isolinux`` and ``syslinux-common`` (same suite) for BIOS boot. The host needs none of
them installed. Extracted files are cached per package hash with a manifest of their SHA256s, which
is checked every time the cache is used.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from builder.cachedir import cache_dir, sha256_file
from builder.debian import Archive, PackageRef, extract_paths
from builder.errors import InvalidInput
from builder.fsutil import write_atomic
from builder.progress import NullProgress, Progress

RELEASE_NUMBERS = {"bookworm": "12", "trixie": "13"}

SYSLINUX_FILES = {
    "isolinux.bin": ("isolinux", "usr/lib/ISOLINUX/isolinux.bin"),
    "ldlinux.c32": ("syslinux-common", "usr/lib/syslinux/modules/bios/ldlinux.c32"),
    "menu.c32": ("syslinux-common", "usr/lib/syslinux/modules/bios/menu.c32"),
    "libutil.c32": ("syslinux-common", "usr/lib/syslinux/modules/bios/libutil.c32"),
    "libcom32.c32": ("syslinux-common", "usr/lib/syslinux/modules/bios/libcom32.c32"),
}


def release_number(release: str) -> str:
    try:
        return RELEASE_NUMBERS[release]
    except KeyError:
        choices = ", ".join(f"{name} ({num})" for name, num in RELEASE_NUMBERS.items())
        raise InvalidInput(f"no netboot installer known for release {release!r}; choose one of: {choices}") from None


def netboot_package(release: str) -> str:
    return f"debian-installer-{release_number(release)}-netboot-amd64"


def _netboot_paths(release: str) -> dict[str, str]:
    base = f"usr/lib/debian-installer/images/{release_number(release)}/amd64/text"
    amd64 = f"{base}/debian-installer/amd64"
    return {
        "linux": f"{amd64}/linux",
        "initrd.gz": f"{amd64}/initrd.gz",
        "grubx64.efi": f"{amd64}/grubx64.efi",
        "bootnetx64.efi": f"{amd64}/bootnetx64.efi",
        "font.pf2": f"{amd64}/grub/font.pf2",
        "version.info": f"{base}/version.info",
    }


@dataclass(frozen=True)
class NetbootFiles:
    """Local, verified copies of everything the installer ISO is made of."""

    release: str
    packages: Mapping[str, PackageRef]  # netboot, isolinux, syslinux-common
    files: Mapping[str, Path]  # short name ("linux", "initrd.gz", "isolinux.bin", ...) -> path
    sha256: Mapping[str, str]

    @property
    def netboot(self) -> PackageRef:
        return self.packages[netboot_package(self.release)]

    def path(self, name: str) -> Path:
        return self.files[name]

    def fingerprint(self) -> dict[str, str]:
        """What the ISO's content depends on (for deterministic dates and cache keys)."""
        return {name: self.sha256[name] for name in sorted(self.sha256)}


def _extract_cached(
    deb: PackageRef, fetch: Callable[[], Path], names: Mapping[str, str], progress: Progress
) -> dict[str, tuple[Path, str]]:
    """Extract *names* ({short name: package path}) once per package hash; verify the cache on every use.

    The .deb itself is fetched (and checked) only when the extracted files are not already cached.
    Returns {short name: (path, sha256)}.
    """
    root = cache_dir("netboot", deb.sha256)
    manifest_path = root / "manifest.json"
    wanted = {short: root / "files" / short for short in names}
    try:
        manifest = json.loads(manifest_path.read_text())
        if all(wanted[s].exists() and sha256_file(wanted[s]) == manifest[s] for s in names):
            return {s: (wanted[s], manifest[s]) for s in names}
    except (FileNotFoundError, ValueError, KeyError):
        pass
    deb_path = fetch()
    progress.step(f"extracting {deb.name} {deb.version}")
    by_path = {path: short for short, path in names.items()}
    written = extract_paths(deb_path, list(by_path), root / "staging")
    manifest = {}
    for pkg_path, staged in written.items():
        short = by_path[pkg_path]
        wanted[short].parent.mkdir(parents=True, exist_ok=True)
        staged.replace(wanted[short])
        manifest[short] = sha256_file(wanted[short])
    write_atomic(manifest_path, json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    return {s: (wanted[s], manifest[s]) for s in names}


def fetch_netboot(release: str, archive: Archive, *, progress: Progress = NullProgress()) -> NetbootFiles:
    """Download (or reuse) and verify the netboot installer and isolinux for *release*."""
    package = netboot_package(release)
    progress.step(f"looking up {package} in {release}")
    refs = archive.find_packages(release, [package, "isolinux", "syslinux-common"])
    files: dict[str, Path] = {}
    sha: dict[str, str] = {}
    groups: dict[str, dict[str, str]] = {package: _netboot_paths(release)}
    for short, (pkg, path) in SYSLINUX_FILES.items():
        groups.setdefault(pkg, {})[short] = path
    for pkg, names in groups.items():
        ref = refs[pkg]
        fetch = functools.partial(archive.fetch_deb, ref)
        for short, (extracted, digest) in _extract_cached(ref, fetch, names, progress).items():
            files[short], sha[short] = extracted, digest
    return NetbootFiles(release=release, packages=refs, files=files, sha256=sha)
