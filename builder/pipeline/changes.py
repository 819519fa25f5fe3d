"""What changed in a golden image: a build against the previous build of the same recipe, and ``imgbuild diff``.

The image's manifest (builder/image/manifest.py) sits beside the cached image, and a refreshed image
replaces both in place; so every job keeps a copy of the manifest it used, content-addressed in the
cache (``manifests/SHA256.json``), named in its report (``cache.image.manifest_copy``). The previous
build of a recipe is the newest report in its history that names one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.cachedir import cache_dir
from builder.errors import InvalidInput
from builder.fsutil import write_atomic
from builder.image.manifest import Manifest, ManifestDiff, diff_manifests, manifest_path, read_manifest
from builder.pipeline import history
from builder.pipeline.releases import LOCAL_MANIFEST, RELEASE_NAME


def keep_copy(manifest: Manifest) -> Path:
    """A content-addressed copy of *manifest* that no later build overwrites."""
    text = json.dumps(manifest.as_dict(), indent=1, sort_keys=True) + "\n"
    path = cache_dir("manifests") / f"{hashlib.sha256(text.encode()).hexdigest()}.json"
    if not path.exists():
        write_atomic(path, text)
    return path


def parse_manifest(text: str) -> Manifest | None:
    try:
        return Manifest.from_dict(json.loads(text))
    except (ValueError, KeyError, TypeError, AttributeError):
        return None


def load_manifest_file(path: Path) -> Manifest | None:
    try:
        return parse_manifest(path.read_text())
    except OSError:
        return None


def manifest_of_report(data: dict[str, Any]) -> Manifest | None:
    """The manifest a report names: its kept copy, else the one beside the image it used."""
    image = (data.get("cache") or {}).get("image") or {}
    for key in ("manifest_copy", "manifest"):
        if image.get(key):
            found = load_manifest_file(Path(image[key]))
            if found is not None:
                return found
    return None


def previous_manifest(job_dir: Path) -> tuple[Manifest, str] | None:
    """The manifest of the newest recorded build of *job_dir*'s recipe, and when it ran."""
    for data in history.runs(job_dir):
        found = manifest_of_report(data)
        if found is not None:
            return found, str(data.get("started") or "?")
    return None


def changes_since(previous: tuple[Manifest, str] | None, current: Manifest | None, what: str) -> dict[str, Any]:
    """The report's ``changes``: summary line plus the full difference (or why there is none)."""
    if current is None:
        return {"summary": "no package manifest for this image", "since": None}
    if previous is None:
        return {"summary": f"first build with a package manifest ({len(current.packages)} packages)", "since": None}
    old, when = previous
    diff = diff_manifests(old, current)
    return {"summary": diff.summary(), "since": when, "against": what, **diff.as_dict()}


# --- imgbuild diff --------------------------------------------------------------------------------


@dataclass
class Side:
    ref: str
    label: str
    manifest: Manifest


@dataclass
class DiffResult:
    a: Side
    b: Side
    diff: ManifestDiff

    def as_dict(self) -> dict[str, Any]:
        return {"a": {"ref": self.a.ref, "what": self.a.label, "release": self.a.manifest.release,
                      "packages": len(self.a.manifest.packages)},
                "b": {"ref": self.b.ref, "what": self.b.label, "release": self.b.manifest.release,
                      "packages": len(self.b.manifest.packages)},
                **self.diff.as_dict()}


class Resolver:
    """Turns what a user names (an image, a manifest, a report, a release) into a manifest, or says why not."""

    def __init__(self, out_root: Path, release_manifest: Any = None) -> None:
        self.out_root = out_root
        self.release_manifest = release_manifest  # callable(name) -> str | None (asks the target)

    def resolve(self, ref: str, which: str) -> Side:
        path = Path(ref)
        if path.is_file():
            return self._file(ref, path, which)
        match = RELEASE_NAME.match(ref)
        if match and "/" not in ref:
            return self._release(ref, which)
        raise InvalidInput(f"{which} ({ref}): no such file, and not a release name (RECIPE-YYYYMMDD-N)",
                           detail="give a golden image (.qcow2), its .manifest.json, a report.json (or a file "
                                  "under OUT/NAME/history/), or a release")

    def _file(self, ref: str, path: Path, which: str) -> Side:
        if path.suffix == ".qcow2":
            found = read_manifest(path)
            if found is None:
                raise InvalidInput(f"{which} ({ref}): this image has no package manifest beside it "
                                   f"({manifest_path(path).name})",
                                   detail="images built before manifests existed have none; build it again with "
                                          "imgbuild make RECIPE --refresh-image")
            return Side(ref, f"image {path.name}", found)
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise InvalidInput(f"{which} ({ref}): not an image, a manifest or a report: {exc}") from None
        if not isinstance(data, dict):
            raise InvalidInput(f"{which} ({ref}): not an image, a manifest or a report")
        if "packages" in data and "image_key" in data:
            manifest = load_manifest_file(path)
            if manifest is None:
                raise InvalidInput(f"{which} ({ref}): a manifest this imgbuild cannot read")
            return Side(ref, "manifest", manifest)
        if "stages" in data and "recipe" in data:
            manifest = manifest_of_report(data)
            if manifest is None:
                why = ("it failed before its image stage" if not (data.get("cache") or {}).get("image")
                       else "its image has no package manifest")
                raise InvalidInput(f"{which} ({ref}): this report names no package manifest: {why}")
            label = f"{data.get('method', 'report')} of {data['recipe']}, {data.get('started', '?')}"
            return Side(ref, label, manifest)
        raise InvalidInput(f"{which} ({ref}): not an image, a manifest or a report")

    def _release(self, name: str, which: str) -> Side:
        text = self.release_manifest(name) if self.release_manifest is not None else None
        if text is None:  # the target could not hold it (or is not reachable): the copy this machine kept
            local = self.out_root / name / LOCAL_MANIFEST
            text = local.read_text() if local.is_file() else None
        if text is None:
            raise InvalidInput(f"{which} ({name}): no release of that name with a stored manifest on the target "
                               "or in the out directory")
        manifest = parse_manifest(text)
        if manifest is None:
            raise InvalidInput(f"{which} ({name}): the manifest stored with this release cannot be read")
        return Side(name, f"release {name}", manifest)


def compare(a: Side, b: Side) -> DiffResult:
    """The difference from *a* to *b*; two images of different Debian releases, or with no package in common,
    are refused as unrelated."""
    if a.manifest.release != b.manifest.release:
        raise InvalidInput(f"{a.ref} and {b.ref} are unrelated: {a.label} is Debian {a.manifest.release}, "
                           f"{b.label} is Debian {b.manifest.release}",
                           detail="diff compares builds of one image over time; their package versions would "
                                  "all differ")
    names_a = {p.name for p in a.manifest.packages}
    names_b = {p.name for p in b.manifest.packages}
    if not names_a & names_b:
        raise InvalidInput(f"{a.ref} and {b.ref} are unrelated: they have no package in common")
    return DiffResult(a, b, diff_manifests(a.manifest, b.manifest))
