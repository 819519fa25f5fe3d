"""Release labels on the local target, without a boot: recorded in the VM's state, copied by no clone, a template
held by its linked clones, a manifest kept with the template; the release rules over them (what is a release,
which is latest, what is a leftover). The full release job on this target boots: test_nightly_boot.py."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from builder.pipeline import releases
from builder.progress import NullProgress
from builder.targets.base import DiskSpec, NicSpec, VMSpec
from builder.targets.local import LocalTarget


def vm(target: LocalTarget, name: str, i: int) -> None:
    target.create_vm(VMSpec(name=name, disks=(DiskSpec(1 << 30),), nics=(NicSpec(f"52:54:00:00:01:0{i}"),)))


def test_labels_dependents_and_manifest_on_the_local_target(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    vm(target, "golden-base-20261129-1", 1)
    vm(target, "golden-base-20261130-1", 2)
    vm(target, "golden-base-20261130-2", 3)  # a candidate an interrupted release left (not a template)
    vm(target, "golden-base", 4)
    for name in ("golden-base-20261129-1", "golden-base-20261130-1"):
        found = target.find_vm(name)
        assert found is not None
        target.make_template(found)
        target.set_labels(found, {"golden-base"})
    newest = target.find_vm("golden-base-20261130-1")
    assert newest is not None
    target.set_labels(newest, {"golden-base", "latest"})
    assert target.labels(target.find_vm("golden-base-20261130-1")) == {"golden-base", "latest"}  # type: ignore[arg-type]
    assert target.store_manifest(newest, '{"format": 1}').endswith("release-manifest.json")
    assert target.read_manifest(target.find_vm("golden-base-20261130-1")) == '{"format": 1}'  # type: ignore[arg-type]

    # a linked clone of a release holds it, and carries no release label itself
    clone = target.clone(newest, "web-7", full=False)
    assert target.labels(clone) == frozenset() and target.dependents(newest) == ["web-7"]

    found = releases.releases_of(target, "golden-base")
    assert [(r.name, r.latest) for r in found] == [("golden-base-20261129-1", False), ("golden-base-20261130-1", True)]
    assert releases.latest_release(target, "golden-base").name == "golden-base-20261130-1"  # type: ignore[union-attr]
    assert [v.name for v in releases.leftovers(target, "golden-base")] == ["golden-base-20261130-2"]
    assert releases.next_name("golden-base", [v.name for v in target.list_vms()],
                              dt.date(2026, 11, 30)) == "golden-base-20261130-3"
    cleaned = releases.clean_up(target, "golden-base")
    assert cleaned == {"removed": ["golden-base-20261130-2"], "latest_repaired": []}
    # keep 1: the older release goes, the newest stays however old the others are
    pruned = releases.prune(target, "golden-base", 1, NullProgress())
    assert pruned == {"removed": ["golden-base-20261129-1"], "held": [], "kept": ["golden-base-20261130-1"]}
    # the release web-7 depends on cannot go: prune keeps it and says who holds it
    older = target.find_vm("golden-base-20261130-1")
    assert older is not None
    target.set_labels(older, {"golden-base"})  # as if a newer release took latest
    vm(target, "golden-base-20261201-1", 5)
    newer = target.find_vm("golden-base-20261201-1")
    assert newer is not None
    target.make_template(newer)
    target.set_labels(newer, {"golden-base", "latest"})
    pruned = releases.prune(target, "golden-base", 1, NullProgress())
    assert pruned["held"] == [{"name": "golden-base-20261130-1", "held_by": ["web-7"]}] and pruned["removed"] == []
    target.destroy(clone)
    for name in ("golden-base-20261130-1", "golden-base-20261201-1", "golden-base"):
        target.destroy(target.find_vm(name))  # type: ignore[arg-type]
    assert target.list_vms() == []


def test_a_stale_latest_is_repaired_newest_wins(tmp_path: Path) -> None:
    """kill -9 between labelling the new release latest and taking the label off the old one leaves two."""
    target = LocalTarget(tmp_path / "out")
    for i, name in enumerate(("web-server-20261130-1", "web-server-20261130-2")):
        vm(target, name, i)
        found = target.find_vm(name)
        assert found is not None
        target.make_template(found)
        target.set_labels(found, {"web-server", "latest"})
    assert releases.latest_release(target, "web-server").name == "web-server-20261130-2"  # type: ignore[union-attr]
    assert releases.clean_up(target, "web-server")["latest_repaired"] == ["web-server-20261130-1"]
    assert [r.latest for r in releases.releases_of(target, "web-server")] == [False, True]
