"""Fixtures for the local target's tests: a target per module that destroys its VMs."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest

from builder.targets.local import LocalTarget


@pytest.fixture(scope="module")
def local_target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalTarget]:
    """A LocalTarget whose every VM is destroyed at the end of the module, even on failure."""
    target = LocalTarget(tmp_path_factory.mktemp("out"), accel="auto")
    yield target
    destroy_all(target)


def destroy_all(target: LocalTarget) -> None:
    """Stop every VM under the target's output directory, then remove them (linked clones first)."""
    vms = [target.find_vm(p.parent.parent.name) for p in sorted(target.out_root.glob("*/vm/state.json"))]
    vms = [vm for vm in vms if vm is not None]
    for vm in vms:
        with contextlib.suppress(Exception):
            target.stop(vm)
    for vm in sorted(vms, key=lambda v: v.state is None or v.state.template_of is None):
        with contextlib.suppress(Exception):
            target.destroy(vm)
