"""network.mode nat on Proxmox VE: an SDN zone, vnet and subnet made once (applied only when something changed),
or the chapter's vmbr1 checked on the chosen node, with the host configuration named when it is missing."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.pipeline.make import MakeOptions, make
from builder.recipe.model import Recipe
from builder.targets.pve.connect import open_pve_target
from tests.pve.conftest import SECRET_ENV, uploads_in, write_targets_file
from tests.pve.test_privileges import TOKEN, grant_documented_role
from tests.pvesim.simulator import PveSimulator


def nat_recipe(web_server: Recipe, bridge: str, address: str | None = "10.10.10.20/24") -> Recipe:
    net = replace(web_server.network, mode="nat", address=address, gateway="10.10.10.1" if address else None,
                  nameservers=("10.10.10.1",), bridge=bridge)
    return replace(web_server, network=net)


def sdn_changes(sim: PveSimulator) -> list[str]:
    return [f"{r.method} {r.path}" for r in sim.requests if r.path.startswith("/cluster/sdn") and r.method != "GET"]


def test_sdn_nat_network_is_made_once(target, pve_sim: PveSimulator, web_server: Recipe,  # type: ignore[no-untyped-def]
                                      stubbed: list[str], tmp_path: Path) -> None:
    recipe = nat_recipe(web_server, "natlab")
    assert make(recipe, tmp_path / "out", target, MakeOptions()).ok
    assert sdn_changes(pve_sim) == ["POST /cluster/sdn/zones", "POST /cluster/sdn/vnets",
                                    "POST /cluster/sdn/vnets/natlab/subnets", "PUT /cluster/sdn"]
    zone = target.client.get("/cluster/sdn/zones/imgbuild")
    assert (zone["type"], zone.get("ipam")) == ("simple", "pve") and "dhcp" not in zone
    [subnet] = target.client.get("/cluster/sdn/vnets/natlab/subnets")
    assert (subnet["cidr"], subnet["gateway"], int(subnet["snat"])) == ("10.10.10.0/24", "10.10.10.1", 1)
    assert pve_sim.vms()[0]["config"]["net0"].endswith(",bridge=natlab,firewall=0")
    assert "natlab" in {i["iface"] for i in target.client.get("/nodes/pve/network", type="any_bridge")}
    # a second make (a new VM) changes nothing in SDN
    assert make(recipe, tmp_path / "out", target, MakeOptions(rebuild=True)).ok
    assert len(sdn_changes(pve_sim)) == 4


def test_dhcp_nat_gets_a_dhcp_range_and_an_unapplied_change_is_applied(
        target, pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str], tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    recipe = nat_recipe(web_server, "natdhcp", address=None)
    # an earlier run made the objects but died before applying them
    target.client.post("/cluster/sdn/zones", zone="imgbuild", type="simple", ipam="pve", dhcp="dnsmasq")
    target.client.post("/cluster/sdn/vnets", vnet="natdhcp", zone="imgbuild")
    assert make(recipe, tmp_path / "out", target, MakeOptions()).ok
    assert sdn_changes(pve_sim)[2:] == ["POST /cluster/sdn/vnets/natdhcp/subnets", "PUT /cluster/sdn"]
    [subnet] = target.client.get("/cluster/sdn/vnets/natdhcp/subnets", running=1)
    assert subnet["dhcp-range"] == [{"start-address": "10.10.10.128", "end-address": "10.10.10.254"}]
    assert subnet["cidr"] == "10.10.10.0/24" and subnet["gateway"] == "10.10.10.1"


def test_foreign_pending_sdn_changes_are_not_applied(target, pve_sim: PveSimulator, web_server: Recipe,  # type: ignore[no-untyped-def]
                                                     stubbed: list[str], tmp_path: Path) -> None:
    target.client.post("/cluster/sdn/zones", zone="other", type="simple")
    with pytest.raises(ImgbuildError, match="pending changes imgbuild did not make: zone other") as err:
        make(nat_recipe(web_server, "natlab"), tmp_path / "out", target, MakeOptions())
    assert "apply or revert them first" in err.value.detail
    assert sdn_changes(pve_sim) == ["POST /cluster/sdn/zones"] and uploads_in(pve_sim) == []


def test_the_chapters_vmbr1_is_checked_on_the_node(pve_sim_factory, tmp_path: Path, web_server: Recipe,  # type: ignore[no-untyped-def]
                                                   stubbed: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    recipe = nat_recipe(web_server, "vmbr1")
    bare = pve_sim_factory()
    write_targets_file(tmp_path / "targets.yaml", bare)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
    monkeypatch.setenv(SECRET_ENV, bare.token.secret)
    with pytest.raises(ImgbuildError, match="bridge vmbr1 does not exist on node pve") as err:
        make(recipe, tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions())
    assert "imgbuild host-net render" in err.value.detail and "shape `nat`" in err.value.detail
    assert "vmbr1 10.10.10.1/24" in err.value.detail and uploads_in(bare) == []

    wrong = pve_sim_factory(bridges={"vmbr0": None, "vmbr1": "172.16.0.1/24"})
    write_targets_file(tmp_path / "targets.yaml", wrong)
    monkeypatch.setenv(SECRET_ENV, wrong.token.secret)
    with pytest.raises(ImgbuildError, match=r"vmbr1 on node pve has 172\.16\.0\.1/24, not an address in 10\.10\.10\.0/24"):
        make(recipe, tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions())

    chapter = pve_sim_factory(bridges={"vmbr0": None, "vmbr1": "10.10.10.1/24"})
    write_targets_file(tmp_path / "targets.yaml", chapter)
    monkeypatch.setenv(SECRET_ENV, chapter.token.secret)
    assert make(recipe, tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions()).ok
    assert sdn_changes(chapter) == [] and chapter.vms()[0]["config"]["net0"].endswith(",bridge=vmbr1,firewall=0")


def test_sdn_needs_sdn_allocate(pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str], tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    pve_sim.add_token(TOKEN, "nat-token-secret", privsep=True)
    grant_documented_role(pve_sim)  # the minimal role: no SDN.Allocate
    write_targets_file(tmp_path / "targets.yaml", pve_sim, token_id=TOKEN)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(tmp_path / "targets.yaml"))
    monkeypatch.setenv(SECRET_ENV, "nat-token-secret")
    with pytest.raises(ImgbuildError, match="SDN.Allocate on /sdn") as err:
        make(nat_recipe(web_server, "natlab"), tmp_path / "out", open_pve_target("sim", tmp_path), MakeOptions())
    assert "pveum acl modify /sdn --users imgbuild@pve" in err.value.detail
    assert sdn_changes(pve_sim) == [] and uploads_in(pve_sim) == []
    # granted as documented: it works, once
    pve_sim.add_role("Imgbuild", [*pve_sim.access.roles["Imgbuild"], "SDN.Allocate", "SDN.Audit"])
    pve_sim.grant("/sdn", "imgbuild@pve", "Imgbuild")
    pve_sim.grant("/sdn", TOKEN, "Imgbuild")
    assert make(nat_recipe(web_server, "natlab"), tmp_path / "out", open_pve_target("sim", tmp_path),
                MakeOptions()).ok
    assert len(sdn_changes(pve_sim)) == 4 and pve_sim.rejections == []
    # once the network is in place, using it needs no SDN.Allocate: SDN.Use (and SDN.Audit, to see it is there)
    pve_sim.add_role("NatUser", ["SDN.Use", "SDN.Audit"])
    pve_sim.access.acl = [a for a in pve_sim.access.acl if a.path != "/sdn"]
    for who in ("imgbuild@pve", TOKEN):
        pve_sim.grant("/sdn/zones/imgbuild", who, "NatUser")
    assert make(nat_recipe(web_server, "natlab"), tmp_path / "out", open_pve_target("sim", tmp_path),
                MakeOptions(rebuild=True)).ok
    assert len(sdn_changes(pve_sim)) == 4 and pve_sim.rejections == []
