"""Same packages, same bytes: the cheapest golden image that still has a kernel and a bootloader, built twice
from cold build directories (a private image cache; the shared apt cache, so both see the same .debs), is
byte-identical, and a refresh that finds no new package keeps the cached file; one more package changes it.

Three image builds (about a minute each on a quiet 2-core machine): boot-marked, run under the heavy lock.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from builder.cachedir import cache_root, sha256_file
from builder.image import GoldenImage, ImageSpec, build_golden_image, diff_manifests, image_manifest
from builder.image.reproducible import source_date_epoch
from builder.proc import run

pytestmark = pytest.mark.boot

SMALLEST = ImageSpec(release="trixie", tasks=(), disk_size=2 * 1024**3, bios="seabios")


@pytest.fixture(scope="module")
def cold_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    shared_apt = cache_root() / "apt-archives"
    shared_apt.mkdir(parents=True, exist_ok=True)
    cache = tmp_path_factory.mktemp("cache")
    (cache / "apt-archives").symlink_to(shared_apt)  # the same .debs (and the same lock) as every other build
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGBUILD_CACHE", str(cache))
        yield cache


@pytest.fixture(scope="module")
def first(cold_cache: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[GoldenImage, str, Path]:
    image = build_golden_image(SMALLEST)
    assert image.cached is False
    keep = tmp_path_factory.mktemp("first") / "first.qcow2"
    os.link(image.path, keep)  # the first build's bytes, whatever a refresh does to the cache
    return image, sha256_file(image.path), keep


def test_a_rebuild_from_the_same_packages_is_byte_identical(first: tuple[GoldenImage, str, Path]) -> None:
    image, digest, keep = first
    again = build_golden_image(SMALLEST, refresh=True)
    if again.changes:  # the mirror published between the two builds: the next build must match this one
        digest = sha256_file(again.path)
        again = build_golden_image(SMALLEST, refresh=True)
    assert again.changes is not None and not again.changes, again.changes.summary() if again.changes else None
    assert sha256_file(again.path) == digest, (
        f"not reproducible: compare {keep} with {again.path} (diffoscope names the differences)")
    assert again.identical and again.path.stat().st_ino == keep.stat().st_ino  # the cached file was kept
    info = image_manifest(again)
    assert info["reproducible"] is True and info["source_date_epoch"] == image_manifest(image)["source_date_epoch"]


def test_the_timestamp_is_the_newest_changelog_in_the_image(first: tuple[GoldenImage, str, Path],
                                                           tmp_path: Path) -> None:
    image, _digest, _keep = first
    epoch = image_manifest(image)["source_date_epoch"]
    raw = tmp_path / "disk.raw"
    run(["qemu-img", "convert", "-U", "-f", "qcow2", "-O", "raw", image.path, raw])
    assert image.manifest is not None
    wanted = [p.name for p in image.manifest.packages if p.name in ("dpkg", "libc6", "openssh-server", "systemd")]
    root = tmp_path / "root"
    (root / "usr/share/doc").mkdir(parents=True)
    for name in wanted:
        run(["debugfs", "-R", f"rdump /usr/share/doc/{name} {root / 'usr/share/doc'}", f"{raw}?offset={1 << 20}"])
    assert len(list((root / "usr/share/doc").iterdir())) == len(wanted) == 4
    assert source_date_epoch(root, [p for p in image.manifest.packages if p.name in wanted]) <= epoch
    listing = run(["debugfs", "-R", "ls -l /etc", f"{raw}?offset={1 << 20}"]).stdout.decode()
    assert "machine-id" in listing
    stat = run(["debugfs", "-R", "stat /etc/hostname", f"{raw}?offset={1 << 20}"]).stdout.decode()
    assert f"mtime: 0x{epoch:08x}" in stat  # written by the build: clamped to the image's timestamp


def test_one_more_package_changes_the_image(first: tuple[GoldenImage, str, Path]) -> None:
    image, digest, _keep = first
    other = build_golden_image(replace(SMALLEST, packages=("hello",)))
    assert other.path != image.path and sha256_file(other.path) != digest
    assert image.manifest is not None and other.manifest is not None
    diff = diff_manifests(image.manifest, other.manifest)
    assert [p.name for p in diff.added] == ["hello"] and not diff.removed, diff.summary()
    assert diff.summary().startswith("1 package added: hello ")
    assert json.loads(other.path.with_suffix(".manifest.json").read_text())["image_key"] == other.key
