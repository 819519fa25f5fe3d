"""Proxmox VE 8.4 or later: older nodes are refused before anything changes, with the reason."""

from __future__ import annotations

from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.pipeline.make import MakeOptions, make
from builder.recipe.model import Recipe
from builder.targets.pve.connect import open_pve_target, target_from_config
from tests.pve.conftest import SECRET_ENV, uploads_in, write_targets_file
from tests.pve.test_client import config_for
from tests.pvesim.cluster import three_nodes
from tests.pvesim.simulator import PveSimulator


def test_a_node_older_than_8_4_is_refused_at_once(pve_sim_factory) -> None:  # type: ignore[no-untyped-def]
    sim = pve_sim_factory(pve_version="8.3.5")
    with pytest.raises(ImgbuildError) as err:
        target_from_config(config_for(sim))
    assert err.value.message == f"Proxmox VE 8.3.5 on {sim.url} is too old: imgbuild needs Proxmox VE 8.4 or later"
    assert "'import' content" in err.value.detail and "8.3.6" in err.value.detail
    assert [r.path for r in sim.requests] == ["/version"]


def test_an_old_node_of_a_cluster_is_not_used(pve_sim_factory, tmp_path: Path, web_server: Recipe,  # type: ignore[no-untyped-def]
                                              stubbed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    nodes = three_nodes()
    nodes[1].version = "8.3.5"  # pve2, the node with the most free memory, was not upgraded yet
    sim: PveSimulator = pve_sim_factory(nodes=nodes)
    write_targets_file(tmp_path / "targets.yaml", sim, node=None)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
    monkeypatch.setenv(SECRET_ENV, sim.token.secret)
    assert make(web_server, tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions(keep=True)).ok
    assert [v["node"] for v in sim.vms()] == ["pve1"]
    write_targets_file(tmp_path / "targets.yaml", sim, node="pve2")  # pinned to it: refused with the reason
    uploads = len(uploads_in(sim))
    with pytest.raises(ImgbuildError, match=r"Proxmox VE 8\.3\.5 on node pve2 is too old"):
        make(web_server, tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions(rebuild=True))
    assert len(uploads_in(sim)) == uploads and [v["node"] for v in sim.vms()] == ["pve1"]
