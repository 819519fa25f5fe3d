"""Staged golden images that a refreshed image replaced are removed once no VM disk is backed by them."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from builder.cachedir import cache_dir
from builder.proc import run
from builder.qcow2 import backing_file, virtual_size
from builder.targets.base import VM, DiskSpec, NicSpec, Staged, VMSpec
from builder.targets.local import LocalTarget
from builder.targets.local.prune import backing_chain, unused_staged_images


def qcow2(path: Path, backing: str | None = None) -> Path:
    args = ["qemu-img", "create", "-q", "-f", "qcow2"]
    if backing:
        args += ["-F", "qcow2", "-b", backing]
    run([*args, path, "64M"])
    return path


def test_backing_chain_follows_absolute_and_relative_names(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    golden = qcow2(tmp_path / "golden.qcow2")
    overlay = qcow2(tmp_path / "a" / "overlay.qcow2", backing=str(golden))
    linked = qcow2(tmp_path / "a" / "linked.qcow2", backing="overlay.qcow2")  # qemu-img: relative to its dir
    assert backing_file(golden) is None and virtual_size(golden) == 64 << 20
    assert backing_file(linked) == tmp_path / "a" / "overlay.qcow2"
    assert backing_chain(linked) == [linked, overlay, golden]
    not_qcow2 = tmp_path / "raw.img"
    not_qcow2.write_bytes(b"\0" * 4096)
    assert backing_chain(not_qcow2) == [not_qcow2] and virtual_size(not_qcow2) is None
    assert backing_chain(tmp_path / "missing.qcow2") == []


def test_a_copy_nothing_uses_waits_for_the_grace_period(tmp_path: Path) -> None:
    staged = tmp_path / ".staged"
    staged.mkdir()
    copy = qcow2(staged / "0123456789abcdef-web-image.qcow2")
    now = time.time()
    assert unused_staged_images(staged, [], now=now, grace=600) == []
    assert unused_staged_images(staged, [], now=now + 601, grace=600) == [copy]
    linked = staged / "fedcba9876543210-web-image.qcow2"
    os.link(copy, tmp_path / "cache-name.qcow2")  # still the cache's image: kept whatever its age
    os.rename(copy, linked)
    assert unused_staged_images(staged, [], now=now + 601, grace=0) == []


@pytest.fixture
def target(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> LocalTarget:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))  # same filesystem as out/: staging links
    return LocalTarget(tmp_path / "out")


def vm_on(target: LocalTarget, name: str, image: Staged) -> VM:
    spec = VMSpec(name=name, disks=(DiskSpec(1024**3, source=image),), nics=(NicSpec(f"52:54:00:00:00:{len(name):02x}"),))
    return target.create_vm(spec)


def test_a_refreshed_images_old_bytes_go_when_the_last_vm_on_them_goes(target: LocalTarget) -> None:
    cached = qcow2(cache_dir("images") / "trixie-seabios-key.qcow2")
    old = target.stage(cached, "image", label="web-image")
    first = vm_on(target, "first", old)

    fresh = qcow2(cached.with_name("fresh.qcow2"))  # the refresh: a new build renamed over the cached image
    run(["qemu-img", "resize", "-q", fresh, "128M"])  # other bytes, so another content address
    os.replace(fresh, cached)
    new = target.stage(cached, "image", label="web-image")
    assert new.ref != old.ref
    second = vm_on(target, "second", new)
    assert Path(old.ref).exists(), "the first VM's disk is still backed by the old image"

    target.destroy(first)
    assert not Path(old.ref).exists()
    assert Path(new.ref).exists()
    target.destroy(second)
    assert Path(new.ref).exists(), "the cache's current image stays staged: it costs no space"
