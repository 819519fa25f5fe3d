"""imgbuild cache: which recipe uses which golden image, and --prune for the ones none uses."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from builder.image.build import image_path, lock_path
from builder.pipeline.specs import image_spec
from builder.proc import run
from builder.recipe import load_recipe

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    shutil.copytree(REPO / "recipes", tmp_path / "recipes")
    return {**os.environ, "PYTHONPATH": str(REPO)}


def imgbuild(tmp_path: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "builder", "--recipes-dir", str(tmp_path / "recipes"), *args],
                          capture_output=True, text=True, env=env, timeout=120, check=False)


def fake_image(path: Path, spec: dict) -> Path:
    """A qcow2 and its manifest where a build would leave them (the bytes are not a Debian system)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    run(["qemu-img", "create", "-q", "-f", "qcow2", path, "1G"])
    path.with_suffix(".json").write_text(json.dumps({"spec": spec, "built": "2026-11-01T00:00:00Z"}))
    path.with_suffix(".manifest.json").write_text(json.dumps({"format": 1, "packages": []}))
    return path


def test_cache_shows_users_and_prune_removes_only_unused_images(tmp_path: Path, env: dict[str, str]) -> None:
    recipes = tmp_path / "recipes"
    web = fake_image(image_path(image_spec(load_recipe("web-server", recipes))),
                     {"release": "trixie", "bios": "seabios", "tasks": ["web-server"]})
    images = web.parent
    old = fake_image(images / "trixie-seabios-000000000000000000000000.qcow2", {"release": "trixie"})
    building = fake_image(images / "bookworm-seabios-111111111111111111111111.qcow2", {"release": "bookworm"})
    (tmp_path / "cache" / "debs").mkdir()
    (tmp_path / "cache" / "debs" / "x.deb").write_bytes(b"d" * 8192)

    listing = json.loads(imgbuild(tmp_path, env, "cache", "--json").stdout)
    used = {Path(i["path"]).name: i["used_by"] for i in listing["images"]}
    assert used == {web.name: ["web-server"], old.name: [], building.name: []}
    assert listing["areas"]["debs"] >= 8192
    text = imgbuild(tmp_path, env, "cache").stdout
    assert "2 image(s) no recipe" in text and "imgbuild cache --prune" in text and "web-server" in text

    fd = os.open(lock_path(building), os.O_RDWR | os.O_CREAT)
    fcntl.flock(fd, fcntl.LOCK_EX)  # a build of that image is running
    try:
        pruned = imgbuild(tmp_path, env, "cache", "--prune")
    finally:
        os.close(fd)
    assert pruned.returncode == 0, pruned.stderr
    assert f"removed {old.name}" in pruned.stdout and "being built right now" in pruned.stdout
    assert web.exists() and web.with_suffix(".json").exists()
    assert not old.exists() and not old.with_suffix(".json").exists()
    assert not old.with_suffix(".manifest.json").exists() and web.with_suffix(".manifest.json").exists()
    assert building.exists()


def test_prune_refuses_when_no_recipe_would_keep_anything(tmp_path: Path, env: dict[str, str]) -> None:
    image = fake_image(tmp_path / "cache" / "images" / "trixie-seabios-000000000000000000000000.qcow2", {})
    (tmp_path / "empty").mkdir()
    result = subprocess.run([sys.executable, "-m", "builder", "--recipes-dir", str(tmp_path / "empty"), "cache",
                             "--prune"], capture_output=True, text=True, env=env, timeout=120, check=False)
    assert result.returncode == 1 and "refusing to prune every golden image" in result.stderr
    assert "Traceback" not in result.stderr and image.exists()
