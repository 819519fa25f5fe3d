"""The image cache's crash safety, with the build itself replaced (no mmdebstrap, no network)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.image import ImageSpec, image_path
from builder.image import build as build_mod

SPEC = ImageSpec(tasks=("ssh-server",))


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    return tmp_path


def test_a_failed_build_leaves_nothing_the_next_run_trusts(cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def crash(spec, key, work: Path, final: Path, progress) -> None:
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

    def fake(spec, key, work: Path, final: Path, progress) -> None:
        assert not stale.exists() and not other.exists()
        final.write_bytes(b"qcow2")

    monkeypatch.setattr(build_mod, "_build", fake)
    image = build_mod.build_golden_image(SPEC)
    assert image.path == final and not image.cached
    assert build_mod.build_golden_image(SPEC).cached
