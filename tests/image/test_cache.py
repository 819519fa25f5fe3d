"""The image cache's crash safety, with the build itself replaced (no mmdebstrap, no network)."""

from __future__ import annotations

import typing
from pathlib import Path

import pytest

from builder.image import ImageSpec, image_path
from builder.image import build as build_mod
from builder.image.manifest import Manifest, Package, read_manifest

SPEC = ImageSpec(tasks=("ssh-server",))


def packages(version: str) -> Manifest:
    return Manifest("key", "trixie", (Package("openssh-server", version, "amd64", "openssh"),))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    return tmp_path


def test_a_failed_build_leaves_nothing_the_next_run_trusts(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(spec, key, work: Path, final: Path, progress) -> tuple[Path, Manifest]:
        (work / "disk.qcow2").write_bytes(b"half an image")
        raise RuntimeError("power cut")

    monkeypatch.setattr(build_mod, "_build", crash)
    with pytest.raises(RuntimeError):
        build_mod.build_golden_image(SPEC)
    final = image_path(SPEC)
    assert not final.exists()
    assert not list(final.parent.glob(".build-*")), "the work directory was left behind"


def test_a_killed_builds_leftovers_are_removed_and_the_image_renamed_into_place(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    final = image_path(SPEC)
    stale = final.parent / f".build-{final.stem}-abcd1234"
    (stale / "root" / "etc").mkdir(parents=True)
    other = final.parent / ".build-bookworm-seabios-0123456789abcdef01234567-zzzz9999"
    other.mkdir()

    def fake(spec, key, work: Path, final: Path, progress) -> tuple[Path, Manifest]:
        assert not stale.exists() and not other.exists()
        (work / "disk.qcow2").write_bytes(b"qcow2")
        return work / "disk.qcow2", packages("1")

    monkeypatch.setattr(build_mod, "_build", fake)
    image = build_mod.build_golden_image(SPEC)
    assert image.path == final and not image.cached and final.read_bytes() == b"qcow2"
    assert build_mod.build_golden_image(SPEC).cached
    assert read_manifest(final) == packages("1")  # written beside it, after the rename


def test_refresh_builds_again_and_leaves_the_old_bytes_to_their_holders(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    builds: list[tuple[bytes, Manifest]] = [(b"build 1", packages("1")), (b"build 2", packages("2"))]

    def fake(spec, key, work: Path, final: Path, progress) -> tuple[Path, Manifest]:
        data, manifest = builds.pop(0)
        (work / "disk.qcow2").write_bytes(data)
        return work / "disk.qcow2", manifest

    monkeypatch.setattr(build_mod, "_build", fake)
    first = build_mod.build_golden_image(SPEC)
    held = cache / "staged-link.qcow2"  # what a staged copy of the image is: another name for its bytes
    held.hardlink_to(first.path)
    assert build_mod.build_golden_image(SPEC).cached and len(builds) == 1

    refreshed = build_mod.build_golden_image(SPEC, refresh=True)
    assert not refreshed.cached and refreshed.path == first.path and not builds
    assert refreshed.path.read_bytes() == b"build 2" and not refreshed.identical
    assert held.read_bytes() == b"build 1"
    assert refreshed.changes is not None and refreshed.changes.summary() == "1 package upgraded: openssh-server 1 -> 2"
    assert read_manifest(refreshed.path) == packages("2")


def test_a_refresh_that_gives_the_same_bytes_keeps_the_cached_file(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Builds are reproducible: a night without new packages rebuilds the same bytes, and the cached file (its
    inode, the hash the cache remembers for it, the VMs built on it) stays exactly as it was."""
    def fake(spec, key, work: Path, final: Path, progress) -> tuple[Path, Manifest]:
        (work / "disk.qcow2").write_bytes(b"the same bytes")
        return work / "disk.qcow2", packages("1")

    monkeypatch.setattr(build_mod, "_build", fake)
    first = build_mod.build_golden_image(SPEC)
    inode = first.path.stat().st_ino
    again = build_mod.build_golden_image(SPEC, refresh=True)
    assert again.identical and not again.changes and again.path.stat().st_ino == inode
    assert again.changes is not None and again.changes.summary() == "no package changed"
    assert not list(first.path.parent.glob(".build-*"))


def test_builds_of_a_release_take_turns_on_the_shared_apt_cache(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A second build waits (and says so) while another one syncs .debs in and out of the apt cache."""
    import threading

    from builder.fsutil import exclusive_lock
    from builder.image import bootstrap as bootstrap_mod

    apt_cache = bootstrap_mod.apt_archive_cache("trixie")
    ran: list[str] = []
    monkeypatch.setattr(bootstrap_mod, "require_tool", lambda *a: "mmdebstrap")
    monkeypatch.setattr(bootstrap_mod, "run_streaming",
                        lambda argv, **kw: ran.append(argv[len(bootstrap_mod.PRIVATE_MOUNTS)]))

    class Steps:
        lines: typing.ClassVar[list[str]] = []

        def step(self, text: str) -> None:
            self.lines.append(text)

    steps = Steps()
    with exclusive_lock(apt_cache.parent / f".{apt_cache.name}.lock"):  # another build holds the cache
        worker = threading.Thread(target=bootstrap_mod.bootstrap, args=(SPEC, cache / "root"),
                                  kwargs={"progress": steps, "epoch": 1})  # fmt: skip
        worker.start()
        worker.join(timeout=1.0)
        assert worker.is_alive() and ran == []
        assert any("waiting for another image build of trixie" in line for line in steps.lines)
    worker.join(timeout=10)
    assert ran == ["mmdebstrap"]


@pytest.mark.timeout(120)
def test_refreshing_an_image_cached_without_a_manifest_does_not_wait_for_itself(
        cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An image an older imgbuild cached has no manifest; the refresh (which holds the image's lock) reads it
    out of the disk without taking that lock a second time, and goes on when it cannot."""
    from builder.proc import run

    final = image_path(SPEC)
    run(["qemu-img", "create", "-q", "-f", "qcow2", final, "1G"])  # no manifest, and no dpkg database in it

    def fake(spec, key, work: Path, final: Path, progress) -> tuple[Path, Manifest]:
        (work / "disk.qcow2").write_bytes(b"new")
        return work / "disk.qcow2", packages("2")

    monkeypatch.setattr(build_mod, "_build", fake)
    refreshed = build_mod.build_golden_image(SPEC, refresh=True)
    assert refreshed.previous is None and refreshed.changes is None and not refreshed.identical
    assert final.read_bytes() == b"new" and read_manifest(final) == packages("2")
