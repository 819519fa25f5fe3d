"""The PVE target on the simulator's three-node cluster (pve1, pve2 online; pve3 offline, with the most memory).

Placement by free memory and CPU, pinned and offline nodes, shared versus node-local storage, VMs found on
every node, clones across nodes, cleanup on the node a failure happened on, concurrent placement.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from builder.errors import ImgbuildError, InvalidInput
from builder.pipeline import specs
from builder.pipeline.make import MakeOptions, make
from builder.recipe import load_recipe
from builder.recipe.model import Recipe
from builder.targets.pve.connect import open_pve_target
from builder.targets.pve.target import PveTarget
from tests.pve.conftest import REPO, SECRET_ENV, uploads_in, write_targets_file
from tests.pvesim.cluster import three_nodes
from tests.pvesim.simulator import PveSimulator


@pytest.fixture
def cluster(pve_sim_factory, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PveSimulator:  # type: ignore[no-untyped-def]
    sim = pve_sim_factory(nodes=three_nodes())
    write_targets_file(tmp_path / "targets.yaml", sim, node=None)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
    monkeypatch.setenv(SECRET_ENV, sim.token.secret)
    monkeypatch.delenv("PROXMOX_URL", raising=False)
    return sim


def retarget(sim: PveSimulator, **settings: object) -> None:
    write_targets_file(Path(os.environ["IMGBUILD_TARGETS"]), sim, **{"node": None, **settings})


@pytest.fixture
def targets(tmp_path: Path) -> Iterator[list[PveTarget]]:
    """Targets opened by a test (each like one imgbuild process), closed at the end."""
    opened: list[PveTarget] = []
    yield opened
    for t in opened:
        t.close()


def open_target(opened: list[PveTarget], tmp_path: Path) -> PveTarget:
    t = open_pve_target("sim", tmp_path)
    opened.append(t)
    return t


def recipe(name: str) -> Recipe:
    return load_recipe(name, REPO / "recipes")


def node_of(sim: PveSimulator, name: str) -> str:
    [vm] = [v for v in sim.vms() if v["config"].get("name") == name]
    return str(vm["node"])


def test_consecutive_makes_land_on_different_nodes_as_free_memory_changes(
        cluster: PveSimulator, stubbed: list[str], tmp_path: Path, targets: list[PveTarget]) -> None:
    # pve1: 10 GiB free, CPU 10%; pve2: 12 GiB free, CPU 5%; pve3: offline (62 GiB free)
    for name, expected in (("web-server", "pve2"), ("ssh-server", "pve1")):
        t = open_target(targets, tmp_path)  # one imgbuild process per make: nothing reserved between them
        report = make(recipe(name), tmp_path / "out", t, MakeOptions(keep=True))
        assert report.ok and node_of(cluster, name) == expected, (name, cluster.vms())
        assert report.vm["node"] == expected
        t.close()
    # web-server now uses pve2's memory and CPU, ssh-server pve1's; then pve1 fills up with other work
    cluster.set_node("pve1", mem=15 << 30)
    t = open_target(targets, tmp_path)
    assert make(recipe("golden-base"), tmp_path / "out", t, MakeOptions(keep=True)).ok
    assert node_of(cluster, "golden-base") == "pve2"
    assert "pve3" not in {v["node"] for v in cluster.vms()}
    # status and find_vm see the VMs of every node
    assert {(vm.name, vm.data["node"]) for vm in t.list_vms()} == {
        ("golden-base", "pve2"), ("ssh-server", "pve1"), ("web-server", "pve2")}
    found = t.find_vm("ssh-server")
    assert found is not None and found.data["node"] == "pve1" and t.is_running(found)
    for vm in t.list_vms():
        t.destroy(vm)
    assert cluster.vm_ids() == []


def test_concurrent_placements_in_one_process_spread(cluster: PveSimulator, tmp_path: Path,
                                                     targets: list[PveTarget]) -> None:
    """make --all -j N: jobs placing VMs at the same time count each other's memory before PVE does."""
    spec = replace(specs.vm_spec(recipe("web-server"), disk_source=None, cdroms=()), memory_mib=4096)
    first, second = open_target(targets, tmp_path), open_target(targets, tmp_path)
    first.preflight(spec, media=("image", "iso"))
    second.preflight(replace(spec, name="web-2"), media=("image", "iso"))
    assert (first._job.node, second._job.node) == ("pve2", "pve1")  # 12 - 4 GiB < 10 GiB free on pve1
    first.close()
    third = open_target(targets, tmp_path)
    third.preflight(replace(spec, name="web-3"), media=("image", "iso"))
    assert third._job.node == "pve2"  # the first job is over: its reservation is gone


def test_shared_storage_takes_one_upload_for_the_cluster(cluster: PveSimulator, stubbed: list[str],
                                                         tmp_path: Path, targets: list[PveTarget]) -> None:
    retarget(cluster, import_storage="shared")
    for name in ("web-server", "ssh-server"):  # lands on pve2, then pve1
        assert make(recipe(name), tmp_path / "out", open_target(targets, tmp_path), MakeOptions(keep=True)).ok
    images = [r for r in uploads_in(cluster) if r.params["filename"].endswith(".qcow2")]
    assert len(images) == 1
    [volid] = cluster.volume_ids("import")
    assert volid.startswith("shared:import/") and cluster.volume_nodes(volid) == [""]
    assert {node_of(cluster, "web-server"), node_of(cluster, "ssh-server")} == {"pve1", "pve2"}
    assert cluster.volume_ids("iso") == []  # each seed went to its node's local storage, and was removed


def test_node_local_storage_gets_a_copy_per_node(cluster: PveSimulator, stubbed: list[str], tmp_path: Path,
                                                 targets: list[PveTarget]) -> None:
    for name in ("web-server", "ssh-server"):
        assert make(recipe(name), tmp_path / "out", open_target(targets, tmp_path), MakeOptions(keep=True)).ok
    # one copy of the image (same content hash, named after the recipe that brought it) on each node used
    copies = {volid: cluster.volume_nodes(volid) for volid in cluster.volume_ids("import")}
    assert sorted(n for nodes in copies.values() for n in nodes) == ["pve1", "pve2"]
    assert len({volid.rsplit("-", 1)[1] for volid in copies}) == 1
    assert len([r for r in uploads_in(cluster) if r.params["filename"].endswith(".qcow2")]) == 2
    # a rebuild on a node that holds the image uploads only the seed
    before = len(uploads_in(cluster))
    again = make(recipe("web-server"), tmp_path / "out", open_target(targets, tmp_path),
                 MakeOptions(keep=True, rebuild=True))
    assert again.ok and again.cache["staged"]["image"]["uploaded"] is False
    assert [r.params["filename"].endswith(".iso") for r in uploads_in(cluster)[before:]] == [True]


def test_pinned_node_offline_or_unknown_fails_before_anything(cluster: PveSimulator, stubbed: list[str],
                                                               tmp_path: Path, targets: list[PveTarget]) -> None:
    retarget(cluster, node="pve3")
    t = open_target(targets, tmp_path)
    with pytest.raises(ImgbuildError, match="node pve3 of sim is offline") as err:
        make(recipe("web-server"), tmp_path / "out", t, MakeOptions())
    assert "pinned by node" in err.value.detail
    with pytest.raises(ImgbuildError, match="node pve3 of sim is offline"):
        make(replace(recipe("web-server"), vm=replace(recipe("web-server").vm, node="pve3")), tmp_path / "out",
             open_target(targets, tmp_path), MakeOptions())
    retarget(cluster, node="pve7")
    with pytest.raises(InvalidInput, match=r"has no node 'pve7' \(nodes: pve1, pve2, pve3\)"):
        open_target(targets, tmp_path)
    assert uploads_in(cluster) == [] and cluster.vm_ids() == []
    assert not cluster.requests_matching("POST") and not cluster.requests_matching("DELETE")


def test_a_failure_on_another_node_leaves_nothing_there(cluster: PveSimulator, stubbed: list[str],
                                                        tmp_path: Path, targets: list[PveTarget]) -> None:
    cluster.faults.fail_task("qmstart", message="start failed: QEMU exited with code 1")
    with pytest.raises(ImgbuildError, match="start failed"):
        make(recipe("web-server"), tmp_path / "out", open_target(targets, tmp_path), MakeOptions())
    assert [r.path for r in cluster.requests_matching("POST", r"/qemu$")] == ["/nodes/pve2/qemu"]
    cluster.wait_tasks()
    assert cluster.vm_ids() == [] and cluster.volume_ids("iso") == []


def test_clones_cross_nodes_only_from_shared_storage(cluster: PveSimulator, stubbed: list[str], tmp_path: Path,
                                                     targets: list[PveTarget]) -> None:
    from builder.pipeline.clone import clone

    base = recipe("golden-base")
    retarget(cluster, node="pve2", disk_storage="shared")
    t = open_target(targets, tmp_path)
    assert make(base, tmp_path / "out", t, MakeOptions()).ok
    t.make_template(t.find_vm("golden-base"))  # type: ignore[arg-type]
    retarget(cluster, node="pve1", disk_storage="shared")
    report = clone(base, "g-one", tmp_path / "out", open_target(targets, tmp_path), linked=True)
    assert report.ok and node_of(cluster, "g-one") == "pve1"
    [req] = cluster.requests_matching("POST", r"/clone$")
    assert req.path == "/nodes/pve2/qemu/100/clone" and req.params["target"] == "pve1"

    # a template on node-local storage stays where it is: a clone pinned elsewhere is refused up front
    retarget(cluster, node="pve2")
    t2 = open_target(targets, tmp_path)
    assert make(replace(base, name="local-base"), tmp_path / "out", t2, MakeOptions()).ok
    t2.make_template(t2.find_vm("local-base"))  # type: ignore[arg-type]
    retarget(cluster, node="pve1")
    uploads = len(uploads_in(cluster))
    with pytest.raises(ImgbuildError, match="cannot clone onto node pve1: the template's disks are on node-local"):
        clone(replace(base, name="local-base"), "g-two", tmp_path / "out", open_target(targets, tmp_path))
    assert len(uploads_in(cluster)) == uploads and "g-two" not in {v["config"].get("name") for v in cluster.vms()}


def test_makes_running_at_once_on_one_target_spread_over_the_nodes(
        cluster: PveSimulator, stubbed: list[str], tmp_path: Path, targets: list[PveTarget]) -> None:
    """make --all -j 2 in one process: each job's node is its own (chosen in its thread), and the memory the
    other job reserved counts, so the two do not both pick the node with the most free memory."""
    from concurrent.futures import ThreadPoolExecutor

    t = open_target(targets, tmp_path)
    big = [replace(recipe(name), vm=replace(recipe(name).vm, memory_mib=4096)) for name in ("web-server", "ssh-server")]
    with ThreadPoolExecutor(2) as pool:
        reports = list(pool.map(lambda r: make(r, tmp_path / "out", t, MakeOptions(keep=True)), big))
    assert all(r.ok for r in reports)
    assert sorted(node_of(cluster, r.name) for r in big) == ["pve1", "pve2"]
    assert {r.vm["node"] for r in reports} == {"pve1", "pve2"} and cluster.rejections == []
