"""Template releases on the PVE simulator: proven by a linked clone before they become latest, never losing the
last good one; kept, held and pruned; interrupted (SIGINT, kill -9) and cleaned up. Guest side stubbed."""

from __future__ import annotations

import json
import signal
import subprocess
from pathlib import Path

import pytest

from tests.jobs.conftest import Guests, stubbed_process
from tests.pvesim.simulator import PveSimulator


def releases(sim: PveSimulator) -> dict[str, set[str]]:
    """Templates named like a release and their tags, from the simulator's own state."""
    found = {}
    for vm in sim.vms():
        config = vm["config"]
        if config.get("template") == "1":
            found[config["name"]] = set(str(config.get("tags", "")).split(";"))
    return found


def latest(sim: PveSimulator) -> list[str]:
    return sorted(name for name, tags in releases(sim).items() if "latest" in tags)


def names(sim: PveSimulator) -> set[str]:
    return {vm["config"]["name"] for vm in sim.vms()}


def test_two_releases_in_a_row_and_a_clone_of_the_latest(cli, guests: Guests, sim_env: PveSimulator,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("release", "golden-base", "--target", "sim") == 0
    first = json.loads((cli.out / "golden-base" / "release.json").read_text())["release"]["name"]
    out = capsys.readouterr().out
    assert f"golden-base: released {first} on sim" in out and "clone it with: imgbuild clone golden-base" in out
    assert cli("release", "golden-base", "--target", "sim") == 0
    second = json.loads((cli.out / "golden-base" / "release.json").read_text())["release"]["name"]
    assert first.rsplit("-", 1)[0] == second.rsplit("-", 1)[0] and int(second[-1]) == int(first[-1]) + 1
    assert releases(sim_env) == {first: {"imgbuild", "golden-base"}, second: {"imgbuild", "golden-base", "latest"}}
    # each candidate was verified, and each was proven by a linked clone that then went away
    assert guests.checked == [first, f"{first}-check", second, f"{second}-check"]
    assert names(sim_env) == {first, second}
    assert f"previous latest: {first}" in capsys.readouterr().out

    assert cli("clone", "golden-base", "--name", "gb-7", "--linked", "--target", "sim") == 0
    report = json.loads((cli.out / "gb-7" / "report.json").read_text())
    assert report["ok"] and report["vm"]["source"] == second and report["method"] == "linked clone"
    assert "linked clone of " + second in capsys.readouterr().out
    config = next(v["config"] for v in sim_env.vms() if v["config"]["name"] == "gb-7")
    assert config["tags"] == "imgbuild"  # a clone of a release is no release
    assert cli("clone", "golden-base", "--name", "gb-8", "--release", first, "--target", "sim") == 0
    assert json.loads((cli.out / "gb-8" / "report.json").read_text())["vm"]["source"] == first

    # keep 1: the older release goes unless a VM depends on it; gb-7 is a linked clone of the newer one
    assert cli("release", "golden-base", "--keep", "1", "--target", "sim") == 0
    third = json.loads((cli.out / "golden-base" / "release.json").read_text())["release"]
    text = capsys.readouterr().out
    assert third["removed"] == [first] and third["held"] == [{"name": second, "held_by": ["gb-7"]}]
    assert f"kept {second}: gb-7 depends on it" in text and f"removed {first}" in text
    assert set(releases(sim_env)) == {second, third["name"]} and latest(sim_env) == [third["name"]]

    # status shows the releases, which is latest and who holds the older one
    capsys.readouterr()
    assert cli("status", "--target", "sim", "--json") == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)["vms"]}
    assert rows[third["name"]]["latest"] and rows[second]["held_by"] == ["gb-7"] and not rows[second]["latest"]
    assert rows[third["name"]]["up_to_date"] is True
    assert cli("status", "--target", "sim") == 0
    assert "RELEASE" in capsys.readouterr().out


def test_a_release_whose_clone_fails_its_checks_leaves_latest_alone(cli, guests: Guests, sim_env: PveSimulator,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("release", "golden-base", "--target", "sim") == 0
    good = latest(sim_env)
    guests.failing.add("-check")
    assert cli("release", "golden-base", "--target", "sim") == 1
    err = capsys.readouterr().err
    assert "1 check(s) failed: service ssh" in err and "release.json" in err
    report = json.loads((cli.out / "golden-base" / "release.json").read_text())
    assert report["release"]["rolled_back"] is True
    assert [s["name"] for s in report["stages"] if not s["ok"]] == ["check"]
    assert latest(sim_env) == good and set(releases(sim_env)) == set(good) and names(sim_env) == set(good)
    assert [v for v in sim_env.volume_ids() if v.endswith(".iso")] == []  # no seed left behind either


def test_make_after_template_is_not_stuck(cli, guests: Guests, sim_env: PveSimulator,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("make", "golden-base", "--target", "sim") == 0
    assert cli("template", "golden-base", "--target", "sim") == 0
    assert "golden-base: released golden-base-" in capsys.readouterr().out
    assert cli("make", "golden-base", "--target", "sim") == 0  # the VM stayed a VM: verified again
    stages = [s["name"] for s in json.loads((cli.out / "golden-base" / "report.json").read_text())["stages"]]
    assert "reuse" in stages and "create" not in stages
    assert cli("make", "golden-base", "--rebuild", "--target", "sim") == 0
    assert len(latest(sim_env)) == 1


def stubbed_release(cli, sim: PveSimulator, small_qcow2: Path, tmp_path: Path, hang: str,
                    *args: str) -> tuple[subprocess.Popen[str], Path]:
    return stubbed_process(cli, small_qcow2, tmp_path, hang, "release", "golden-base", "--target", "sim", *args)


@pytest.mark.parametrize("where", ["-check", "golden-base"])
def test_kill_9_mid_release_leaves_nothing_tagged_latest_and_the_next_run_cleans_up(
        where: str, cli, guests: Guests, sim_env: PveSimulator, small_qcow2: Path, tmp_path: Path,
        capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 while the candidate (a VM) or its linked clone (of the candidate template) is being checked:
    nothing new is labelled latest; status names the leftovers and removes them; the next release works."""
    assert cli("release", "golden-base", "--target", "sim") == 0
    good = latest(sim_env)
    proc, hanging = stubbed_release(cli, sim_env, small_qcow2, tmp_path, where if where == "-check" else "-2")
    killed_at = hanging.read_text()
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    sim_env.wait_tasks()
    assert latest(sim_env) == good
    left = names(sim_env) - set(good)
    assert killed_at in left and all(n.startswith("golden-base-") for n in left)

    capsys.readouterr()
    assert cli("status", "--target", "sim") == 0
    out = capsys.readouterr().out
    for name in left:
        assert f"removed {name}: left by an interrupted release" in out
    assert names(sim_env) == set(good) and latest(sim_env) == good
    assert cli("release", "golden-base", "--target", "sim") == 0
    assert len(releases(sim_env)) == 2 and latest(sim_env) != good


def test_ctrl_c_mid_release_rolls_back(cli, guests: Guests, sim_env: PveSimulator, small_qcow2: Path,
                                       tmp_path: Path) -> None:
    assert cli("release", "golden-base", "--target", "sim") == 0
    good = latest(sim_env)
    proc, _ = stubbed_release(cli, sim_env, small_qcow2, tmp_path, "-check")
    proc.send_signal(signal.SIGINT)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-3000:]
    assert "interrupted" in err and "Traceback" not in err
    sim_env.wait_tasks()
    assert names(sim_env) == set(good) and latest(sim_env) == good
    report = json.loads((cli.out / "golden-base" / "release.json").read_text())
    assert report["ok"] is False and report["release"]["rolled_back"] is True
