"""Replacing a VM on the local target keeps the media the new VM was just given (no guest boots here: the
golden image is a small blank qcow2, and boot and checks are stubbed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.image.build import GoldenImage
from builder.pipeline import make as make_module
from builder.pipeline.make import MakeOptions, make
from builder.proc import run
from builder.recipe import load_recipe
from builder.targets.base import Endpoint
from builder.targets.local import LocalTarget
from builder.verify.checks import Outcome
from tests.conftest import REPO
from tests.local.conftest import destroy_all


@pytest.fixture
def booted(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> list[list[str]]:
    """Stubs: each boot records the VM's CD-ROM files that are missing (QEMU would refuse to start)."""
    golden = tmp_path / "golden.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", golden, "1G"])
    missing: list[list[str]] = []

    def boot(recipe, target, vm, progress, report=None):  # type: ignore[no-untyped-def]
        state = target._state(vm)
        missing.append([c for c in state.cdroms if c and not Path(c).exists()])
        return "192.168.1.250"

    def verify(recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):  # type: ignore[no-untyped-def]
        return [Outcome("ssh", True, "login", f"stub: {address}")]

    monkeypatch.setattr(make_module, "build_golden_image", lambda spec, refresh=False, progress=None:
                        GoldenImage(golden, "test-key", cached=True))
    monkeypatch.setattr(make_module, "boot", boot)
    monkeypatch.setattr(make_module, "verify", verify)
    monkeypatch.setattr(LocalTarget, "endpoint", lambda self, vm, address, port: Endpoint(address, port, "stub"))
    return missing


def test_a_rebuild_from_the_same_seed_boots_with_its_seed(booted: list[list[str]], tmp_path: Path) -> None:
    recipe = load_recipe("web-server", REPO / "recipes")
    target = LocalTarget(tmp_path / "out", accel="tcg")
    try:
        assert make(recipe, tmp_path / "out", target, MakeOptions()).ok
        # The same seed bytes, so the same content-addressed name as the earlier VM's seed, which goes with it.
        rebuilt = make(recipe, tmp_path / "out", target, MakeOptions(rebuild=True))
        assert rebuilt.ok and rebuilt.vm["reused"] is False
        assert booted == [[], []]
        assert list((tmp_path / "out" / ".staged").glob("*.iso")) == []  # verified: the seed was forgotten
    finally:
        destroy_all(target)
