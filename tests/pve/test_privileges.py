"""The token's privileges, checked up front: the documented minimal role suffices (on each version), a missing
privilege stops make in its check stage with the pveum commands that grant it, before anything changes."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

import pytest

from builder.cli.main import main
from builder.errors import ImgbuildError
from builder.pipeline.make import MakeOptions, make
from builder.recipe.model import Recipe
from builder.targets.pve import privileges
from builder.targets.pve.connect import open_pve_target
from tests.pve.conftest import REPO, SECRET_ENV, uploads_in, write_targets_file
from tests.pvesim.simulator import PveSimulator

TOKEN = "imgbuild@pve!build"
SECRET = "4c1d-limited-token-secret"
DOC_PATHS = ["/vms", "/storage", "/nodes", "/sdn/zones/localnetwork"]


def pveum(sim: PveSimulator, command: str) -> None:
    """Run one of the pveum commands imgbuild prints or documents against the simulator's user.cfg."""
    argv = shlex.split(command.split("#", 1)[0])
    assert argv[0] == "pveum", command
    if argv[1:3] == ["role", "add"]:
        sim.add_role(argv[3], argv[argv.index("--privs") + 1].split(","))
    elif argv[1:3] == ["acl", "modify"]:
        role = argv[argv.index("--roles") + 1]
        for flag in ("--users", "--tokens"):
            if flag in argv:
                sim.grant(argv[3], argv[argv.index(flag) + 1], role)
    else:
        raise AssertionError(f"unexpected command {command}")


@pytest.fixture
def limited(pve_sim: PveSimulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> PveSimulator:
    """The simulator with a privilege-separated token of imgbuild@pve (no ACLs yet), named in the targets file."""
    pve_sim.add_token(TOKEN, SECRET, privsep=True)
    targets = write_targets_file(tmp_path / "targets.yaml", pve_sim, token_id=TOKEN)
    monkeypatch.setenv("IMGBUILD_TARGETS", str(targets))
    monkeypatch.setenv(SECRET_ENV, SECRET)
    monkeypatch.delenv("PROXMOX_URL", raising=False)
    return pve_sim


def grant_documented_role(sim: PveSimulator, *, without: str | None = None) -> None:
    major = int(sim.version.split(".")[0])
    for cmd in privileges.pveum_commands(TOKEN, DOC_PATHS, major):
        if without and "role add" in cmd:
            cmd = cmd.replace(f"{without},", "").replace(f",{without}", "")
        pveum(sim, cmd)


def test_the_documented_minimal_role_is_enough(limited: PveSimulator, web_server: Recipe, stubbed: list[str],
                                               tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    grant_documented_role(limited)
    base = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(tmp_path / "out")]
    assert main([*base, "doctor", "--target", "sim"]) == 0, capsys.readouterr()
    assert "sim: ready for imgbuild" in capsys.readouterr().out
    assert main([*base, "make", "web-server", "--target", "sim"]) == 0
    assert main([*base, "template", "web-server", "--target", "sim"]) == 0
    assert main([*base, "clone", "web-server", "--name", "web-2", "--linked", "--ip", "192.168.1.251/24",
                 "--target", "sim"]) == 0
    assert main([*base, "status", "--target", "sim"]) == 0
    # the clone, then the release template (`imgbuild template` makes one: web-server-YYYYMMDD-n) and the VM
    names = sorted((v["config"]["name"] for v in limited.vms()), key=lambda n: (n != "web-2", n != "web-server", n))
    for name in names:
        assert main([*base, "destroy", name, "--target", "sim"]) == 0, name
    assert limited.vm_ids() == [] and limited.rejections == []  # not one request refused


@pytest.mark.parametrize("lacking", ["agent", "Datastore.AllocateTemplate", "SDN.Use"])
def test_a_missing_privilege_stops_make_before_anything_changes(limited: PveSimulator, web_server: Recipe,
                                                                stubbed: list[str], tmp_path: Path,
                                                                lacking: str) -> None:
    agent = "VM.Monitor" if limited.version == "8.4" else "VM.GuestAgent.Audit"
    priv = agent if lacking == "agent" else lacking
    grant_documented_role(limited, without=priv)
    target = open_pve_target("sim", tmp_path)
    with pytest.raises(ImgbuildError) as err:
        make(web_server, tmp_path / "out", target, MakeOptions())
    message, detail = err.value.message, err.value.detail
    assert f"the API token {TOKEN} lacks privileges" in message and priv in message
    assert "grant them" in detail and "pveum role add Imgbuild --privs" in detail
    assert f"--users imgbuild@pve --tokens '{TOKEN}' --roles Imgbuild" in detail
    if lacking == "agent":  # per version: PVE 9 has no VM.Monitor
        assert ("VM.Monitor" in detail) == (limited.version == "8.4")
        assert "read the guest's address from its agent" in detail
    # nothing was uploaded, created or removed; the report says where it stopped
    assert uploads_in(limited) == [] and limited.vm_ids() == []
    assert not [r for r in limited.requests if r.method in ("POST", "PUT", "DELETE")]
    report = json.loads((tmp_path / "out" / "web-server" / "report.json").read_text())
    assert [s["name"] for s in report["stages"]] == ["check"] and report["stages"][0]["ok"] is False


def test_doctor_names_what_is_missing_and_the_commands(limited: PveSimulator, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    limited.add_role("Half", ["VM.Audit", "Datastore.Audit"])
    limited.grant("/", "imgbuild@pve", "Administrator")
    limited.grant("/", TOKEN, "Half")
    base = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(tmp_path / "out")]
    assert main([*base, "doctor", "web-server", "--target", "sim"]) == 1
    out = capsys.readouterr().out
    assert f"sim: Proxmox VE {limited.pve_version} at {limited.url}" in out
    assert "storage local " in out and "bridge  vmbr0" not in out  # a bridge needs SDN.Audit or SDN.Use to be seen
    assert "MISSING" in out and "VM.Allocate" in out and "pveum acl modify /vms" in out
    assert main([*base, "doctor", "--target", "sim", "--json"]) == 1
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] is False and report["privileges"]["/"] == ["Datastore.Audit", "VM.Audit"]
    missing: dict[str, set[str]] = {}
    for need in report["needs"]:
        missing.setdefault(need["path"].split("/")[1], set()).update(need["missing"])
    assert "VM.Allocate" in missing["vms"] and "Datastore.AllocateTemplate" in missing["storage"]
    assert report["nodes"][0]["storages"] and limited.rejections == []
