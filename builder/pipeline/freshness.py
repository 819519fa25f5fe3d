"""Is a VM or release still up to date with its recipe, and if not, why? Without a boot or an upload.

``make`` keys a VM by everything it is built from (``Inputs.key``: the seed ISO's bytes, the golden
image's bytes, the installer ISO, the hardware) and records the parts in its report, with two more
that explain a difference: the resolved recipe's own key and imgbuild's version. ``current_inputs``
renders the recipe and builds its seed ISO in a temporary file (cheap, deterministic) and reads the
cached image's hash; ``judge`` compares and says why not: recipe changed, newer image, newer imgbuild.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from builder import __version__
from builder.cachedir import cached_sha256, content_key, sha256_file
from builder.errors import ImgbuildError
from builder.image.build import image_path
from builder.iso.installer import read_seed_files
from builder.iso.seed import build_seed_iso, content_epoch
from builder.pipeline import history, specs
from builder.recipe.model import Recipe
from builder.render.write import render_recipe


@dataclass(frozen=True)
class Inputs:
    key: str  # what the target records with the VM (VMSpec.inputs)
    method: str
    seed: str
    installer: str | None
    image: str | None
    vm: str  # key of the hardware spec
    recipe: str  # key of the resolved recipe, without what differs between a recipe and its release candidate
    imgbuild: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def recipe_key(recipe: Recipe) -> str:
    """The resolved recipe's content, without its file's location, its name and its MAC (a release candidate is
    the recipe under another name and MAC)."""
    data = recipe.resolved()
    data.pop("source", None)
    data.pop("name", None)
    network = dict(data.get("network") or {})
    network.pop("mac", None)
    network.pop("mac_given", None)
    data["network"] = network
    return content_key(data)


def inputs_of(recipe: Recipe, *, method: str, seed: Path, installer: Path | None, image: Path | None) -> Inputs:
    spec = specs.vm_spec(recipe, disk_source=None, cdroms=())
    seed_sha = sha256_file(seed)
    installer_sha = sha256_file(installer) if installer else None
    # the image's bytes, not its spec: a refreshed image (same spec, newer packages) makes a new VM
    image_sha = cached_sha256(image) if image else None
    parts = {"method": method, "seed": seed_sha, "installer": installer_sha, "image": image_sha, "vm": asdict(spec)}
    return Inputs(key=content_key(parts), method=method, seed=seed_sha, installer=installer_sha, image=image_sha,
                  vm=content_key(parts["vm"]), recipe=recipe_key(recipe), imgbuild=__version__)


def current_inputs(recipe: Recipe, out_root: Path) -> tuple[Inputs | None, str]:
    """What ``make`` would build *recipe* from now, or None and why that cannot be told without building."""
    method = recipe.install.method
    rendered = render_recipe(recipe, out_root)
    image = None
    if method == "image":
        image = image_path(specs.image_spec(recipe))
        if not image.exists():
            return None, "its golden image is not built yet (make builds it)"
    installer = None
    if method == "installer":
        installer = rendered.out_dir / "installer.iso"
        if not installer.exists():
            return None, "its installer ISO is not built yet"
    files = read_seed_files(rendered.out_dir)
    with tempfile.TemporaryDirectory(prefix=".status-", dir=rendered.out_dir) as tmp:
        seed = build_seed_iso(files, Path(tmp) / "seed.iso", epoch=content_epoch(files))
        return inputs_of(recipe, method=method, seed=seed, installer=installer, image=image), ""


def recorded_inputs(job_dir: Path, key: str | None) -> dict[str, Any] | None:
    """The inputs a report of *job_dir* recorded for a VM built with *key* (report.json, then the history)."""
    if not key:
        return None
    candidates = [job_dir / "report.json", *reversed(history.entries(job_dir))]
    for path in candidates:
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        inputs = (data.get("cache") or {}).get("inputs") if isinstance(data, dict) else None
        if isinstance(inputs, dict) and inputs.get("key") == key:
            return inputs
    return None


@dataclass
class Verdict:
    up_to_date: bool | None  # None: cannot tell
    why: list[str]

    def line(self) -> str:
        if self.up_to_date:
            return "yes"
        return ("no: " if self.up_to_date is False else "unknown: ") + "; ".join(self.why)


def judge(recorded: dict[str, Any] | None, built_key: str | None, current: Inputs | None, unknown_why: str = "",
          *, release: bool = False) -> Verdict:
    """Compare what a VM (or, with *release*, a release template) was built from with what its recipe gives now.
    A release has its own seed by design: its recipe, image and imgbuild are compared, not its key."""
    if current is None:
        return Verdict(None, [unknown_why or "the recipe's inputs cannot be told without building"])
    if not release and built_key and built_key == current.key:
        return Verdict(True, [])
    if recorded is None:
        if release or not built_key:
            return Verdict(None, ["no record here of what it was built from"])
        return Verdict(False, ["built from other inputs (no record here of which)"])
    why = []
    if recorded.get("recipe") != current.recipe:
        why.append("recipe changed")
    if recorded.get("method") != current.method:
        why.append(f"install method changed ({recorded.get('method')} -> {current.method})")
    if recorded.get("image") != current.image:
        why.append("newer image" if recorded.get("image") and current.image else "other image")
    if recorded.get("imgbuild") != current.imgbuild:
        why.append(f"newer imgbuild ({recorded.get('imgbuild') or 'older'} -> {current.imgbuild})")
    if not release and not why:
        if recorded.get("vm") != current.vm:
            why.append("hardware changed")
        elif recorded.get("seed") != current.seed:
            why.append("seed changed (its rendered files differ)")
        else:
            why.append("built from other inputs")
    return Verdict(not why, why)


def check_current(recipe: Recipe, out_root: Path) -> tuple[Inputs | None, str]:
    """current_inputs, with a render failure (e.g. a missing password variable) as the reason instead."""
    try:
        return current_inputs(recipe, out_root)
    except ImgbuildError as exc:
        return None, exc.message
