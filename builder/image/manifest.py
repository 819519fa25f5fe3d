"""The package manifest of a golden image: every installed package (name, version, architecture, source
package), written beside the cached image when it is built, and the difference between two manifests.

The list comes from dpkg itself: ``dpkg-query --admindir`` on the image's /var/lib/dpkg, either the root
directory of a build or the status file read out of a finished qcow2 (images cached before manifests
existed get theirs that way, without a boot). Versions are ordered as dpkg orders them, by python-debian's
``Version`` (epochs, ``~``, ``+debNuM``), never by string comparison.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

from debian.debian_support import Version

from builder.errors import ImgbuildError
from builder.fsutil import write_atomic
from builder.proc import require_tool, run

FORMAT = 1  # bump when the JSON layout changes; read_manifest ignores other formats
# One line per package; db:Status-Status tells installed packages from removed ones that left config files.
QUERY_FORMAT = r"${db:Status-Status}\t${Package}\t${Version}\t${Architecture}\t${source:Package}\n"
STATUS_FILE = "var/lib/dpkg/status"


@dataclass(frozen=True, order=True)
class Package:
    name: str
    version: str
    arch: str
    source: str  # the source package it was built from (its own name when the same)


@dataclass(frozen=True)
class Manifest:
    """The packages installed in one golden image, sorted by name and architecture."""

    image_key: str
    release: str
    packages: tuple[Package, ...]
    # What the image build asked for (mmdebstrap --include): "what changed" names these first.
    requested: tuple[str, ...] = ()

    def as_dict(self) -> dict:
        return {"format": FORMAT, "image_key": self.image_key, "release": self.release,
                "requested": list(self.requested), "packages": [asdict(p) for p in self.packages]}

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        return cls(image_key=str(data["image_key"]), release=str(data["release"]),
                   packages=tuple(sorted(Package(**p) for p in data["packages"])),
                   requested=tuple(data.get("requested") or ()))

    def get(self, name: str) -> Package | None:
        """The package called *name* (the first architecture when several are installed)."""
        return next((p for p in self.packages if p.name == name), None)


def manifest_path(image: Path) -> Path:
    """Where the manifest of the golden image *image* (``x.qcow2``) lives: ``x.manifest.json``."""
    return image.with_suffix(".manifest.json")


# --- reading what dpkg knows -----------------------------------------------------------------------


def parse_dpkg_query(text: str) -> tuple[Package, ...]:
    """Packages from the output of ``dpkg-query -W -f=QUERY_FORMAT`` (installed ones only), sorted."""
    packages = set()
    for line in text.splitlines():
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 5:
            raise ImgbuildError(f"unexpected dpkg-query output line: {line!r}")
        status, name, version, arch, source = fields
        if status != "installed":
            continue  # config-files, half-installed: not part of what the image runs
        packages.add(Package(name, version, arch, source or name))
    return tuple(sorted(packages))


def query_admindir(admindir: Path) -> tuple[Package, ...]:
    """The installed packages recorded in the dpkg database *admindir* (the host's dpkg-query reads it)."""
    require_tool("dpkg-query", "dpkg")
    proc = run(["dpkg-query", f"--admindir={admindir}", "-W", f"-f={QUERY_FORMAT}"])
    return parse_dpkg_query(proc.stdout.decode("utf-8", "replace"))


def manifest_of_root(root: Path, *, image_key: str, release: str, requested: Iterable[str] = ()) -> Manifest:
    """The manifest of a built root directory (called before the root becomes a filesystem)."""
    return Manifest(image_key, release, query_admindir(root / "var/lib/dpkg"), tuple(requested))


def write_manifest(image: Path, manifest: Manifest) -> Path:
    path = manifest_path(image)
    write_atomic(path, json.dumps(manifest.as_dict(), indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(image: Path) -> Manifest | None:
    """The manifest written beside *image*, or None when it has none (or one this builder cannot read)."""
    try:
        data = json.loads(manifest_path(image).read_text())
        if data.get("format") != FORMAT:
            return None
        return Manifest.from_dict(data)
    except (OSError, ValueError, KeyError, TypeError):
        return None


def recover_manifest(image: Path, *, image_key: str, release: str, requested: Iterable[str] = (),
                     workdir: Path | None = None) -> Manifest:
    """Read the package list out of a finished golden image, without booting it, and write it beside it.

    For images cached before manifests were written: the qcow2 becomes a sparse raw file (qemu-img), the
    root partition is found in its partition table (sfdisk) and debugfs reads /var/lib/dpkg/status from the
    ext4 filesystem; dpkg-query then reads that database as it would a built root. The raw copy goes in
    *workdir* (default: beside the image; it needs room for the image's data). Raises ImgbuildError when
    the image cannot be read that way.
    """
    for tool, package in (("qemu-img", "qemu-utils"), ("sfdisk", "fdisk"), ("debugfs", "e2fsprogs")):
        require_tool(tool, package)
    with tempfile.TemporaryDirectory(prefix=".manifest-", dir=workdir or image.parent) as tmp:
        raw = Path(tmp) / "disk.raw"
        run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", image, raw])
        offset = root_partition_offset(raw, image)
        proc = run(["debugfs", "-R", f"cat /{STATUS_FILE}", f"{raw}?offset={offset}"], check=False)
        if proc.returncode != 0 or not proc.stdout.startswith(b"Package: "):
            raise ImgbuildError(f"cannot read /{STATUS_FILE} from the root filesystem of {image}",
                                detail=proc.stderr.decode("utf-8", "replace").strip())
        admindir = Path(tmp) / "dpkg"
        (admindir / "updates").mkdir(parents=True)
        (admindir / "status").write_bytes(proc.stdout)
        raw.unlink()
        manifest = Manifest(image_key, release, query_admindir(admindir), tuple(requested))
    write_manifest(image, manifest)
    return manifest


LINUX_PARTITION_TYPES = ("83", "0FC63DAF-8483-4772-8E79-3D69D8477DE4")


def root_partition_offset(raw: Path, name: Path | None = None) -> int:
    """Byte offset of the (last) Linux partition of the raw disk *raw*: the root filesystem of a golden image.
    Errors name *name* (the image *raw* was converted from)."""
    name = name or raw
    proc = run(["sfdisk", "--json", raw], check=False)
    if proc.returncode != 0 or not proc.stdout.strip():
        raise ImgbuildError(f"{name} has no partition table, so no Linux partition")
    table = json.loads(proc.stdout)["partitiontable"]
    sector = int(table.get("sectorsize", 512))
    roots = [p for p in table.get("partitions", []) if str(p.get("type", "")).upper() in LINUX_PARTITION_TYPES]
    if not roots:
        raise ImgbuildError(f"{name} has no Linux partition")
    return int(roots[-1]["start"]) * sector


# --- the difference between two manifests ----------------------------------------------------------


@dataclass(frozen=True, order=True)
class Change:
    name: str
    old: str
    new: str
    arch: str


@dataclass(frozen=True)
class ManifestDiff:
    added: tuple[Package, ...] = ()
    removed: tuple[Package, ...] = ()
    upgraded: tuple[Change, ...] = ()
    downgraded: tuple[Change, ...] = ()
    # Names the summary mentions first (what the image asked for), then any other non-library package.
    requested: tuple[str, ...] = field(default=(), compare=False)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.upgraded or self.downgraded)

    def summary(self) -> str:
        """One line, e.g. "14 packages upgraded, including openssh-server 1:10.0p1-7 -> 1:10.0p1-7+deb13u1"."""
        if not self:
            return "no package changed"
        groups: list[tuple[str, list[tuple[str, str]]]] = [
            (verb, [(c.name, f"{c.name} {c.old} -> {c.new}") for c in changes])
            for verb, changes in (("upgraded", self.upgraded), ("downgraded", self.downgraded))
        ]
        groups += [
            (verb, [(p.name, f"{p.name} {p.version}") for p in packages])
            for verb, packages in (("added", self.added), ("removed", self.removed))
        ]
        return "; ".join(self._phrase(verb, items) for verb, items in groups if items)

    def _phrase(self, verb: str, items: list[tuple[str, str]]) -> str:
        """"3 packages upgraded, including NOTABLE"; up to two are all named."""
        count = f"{len(items)} package{'s' if len(items) != 1 else ''} {verb}"
        if len(items) <= 2:
            return f"{count}: {', '.join(text for _name, text in items)}"
        _name, text = min(items, key=lambda item: self._rank(item[0]))
        return f"{count}, including {text}"

    def _rank(self, name: str) -> tuple[int, str]:
        if name in self.requested:
            return (0, name)
        return (1 if not name.startswith("lib") else 2, name)

    def lines(self) -> list[str]:
        """Every change, one per line: "+ name version", "- name version", "^ name old -> new", "v ...". """
        out = [f"+ {p.name} {p.version}" for p in self.added]
        out += [f"- {p.name} {p.version}" for p in self.removed]
        out += [f"^ {c.name} {c.old} -> {c.new}" for c in self.upgraded]
        out += [f"v {c.name} {c.old} -> {c.new}" for c in self.downgraded]
        return out

    def as_dict(self) -> dict:
        return {
            "added": [asdict(p) for p in self.added],
            "removed": [asdict(p) for p in self.removed],
            "upgraded": [asdict(c) for c in self.upgraded],
            "downgraded": [asdict(c) for c in self.downgraded],
            "summary": self.summary(),
        }


def _by_name(packages: Iterable[Package]) -> dict[str, Package]:
    """Packages keyed by name, or name:arch for a name installed for several architectures."""
    packages = list(packages)
    counts: dict[str, int] = {}
    for p in packages:
        counts[p.name] = counts.get(p.name, 0) + 1
    return {(p.name if counts[p.name] == 1 else f"{p.name}:{p.arch}"): p for p in packages}


def diff_manifests(old: Manifest, new: Manifest) -> ManifestDiff:
    """What changed from *old* to *new*: versions compared in Debian's order (an equal version spelled
    differently, such as 1.0 and 0:1.0, is no change)."""
    before, after = _by_name(old.packages), _by_name(new.packages)
    upgraded, downgraded = [], []
    for key in sorted(before.keys() & after.keys()):
        a, b = before[key], after[key]
        old_version, new_version = Version(a.version), Version(b.version)
        if new_version > old_version:
            upgraded.append(Change(b.name, a.version, b.version, b.arch))
        elif new_version < old_version:
            downgraded.append(Change(b.name, a.version, b.version, b.arch))
    return ManifestDiff(
        added=tuple(after[k] for k in sorted(after.keys() - before.keys())),
        removed=tuple(before[k] for k in sorted(before.keys() - after.keys())),
        upgraded=tuple(upgraded),
        downgraded=tuple(downgraded),
        requested=new.requested or old.requested,
    )
