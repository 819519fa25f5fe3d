"""imgbuild status: up to date with its recipe or not, and why, without a boot or an upload (PVE simulator)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from builder.cli.main import main
from builder.pipeline import freshness
from builder.proc import run
from tests.jobs.conftest import Guests
from tests.pve.conftest import REPO
from tests.pvesim.simulator import PveSimulator


def status(recipes: Path, out: Path, capsys: pytest.CaptureFixture[str]) -> dict:
    capsys.readouterr()
    assert main(["--recipes-dir", str(recipes), "--out-dir", str(out), "status", "--target", "sim", "--json"]) == 0
    return json.loads(capsys.readouterr().out)


def test_status_says_whether_each_vm_is_up_to_date_and_why_not(
        guests: Guests, sim_env: PveSimulator, tmp_path: Path, small_qcow2: Path,
        capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", recipes)
    out = tmp_path / "out"
    base = ["--recipes-dir", str(recipes), "--out-dir", str(out)]
    assert main([*base, "make", "web-server", "golden-base", "-j", "2", "--target", "sim"]) == 0
    before = len(sim_env.requests_matching())
    rows = {r["name"]: r for r in status(recipes, out, capsys)["vms"]}
    assert rows["web-server"]["up_to_date"] is True and rows["golden-base"]["up_to_date"] is True
    # no boot, no upload: status only reads
    assert [r for r in sim_env.requests_matching()[before:] if r.method != "GET"] == []

    # the recipe changed
    web = recipes / "web-server.yaml"
    web.write_text(web.read_text().replace("description:", "timezone: Europe/Berlin\ndescription:", 1))
    rows = {r["name"]: r for r in status(recipes, out, capsys)["vms"]}
    assert rows["web-server"]["up_to_date"] is False and rows["web-server"]["why"] == ["recipe changed"]
    assert rows["golden-base"]["up_to_date"] is True

    # a newer golden image (what make --refresh-image leaves in the cache)
    run(["qemu-img", "create", "-q", "-f", "qcow2", small_qcow2, "3G"])
    rows = {r["name"]: r for r in status(recipes, out, capsys)["vms"]}
    assert rows["golden-base"]["up_to_date"] is False and rows["golden-base"]["why"] == ["newer image"]
    assert rows["web-server"]["why"] == ["recipe changed", "newer image"]

    # a newer imgbuild, whose renderer writes the seed differently (same recipe, same image)
    assert main([*base, "make", "golden-base", "--target", "sim"]) == 0  # rebuilt on the new image
    rows = {r["name"]: r for r in status(recipes, out, capsys)["vms"]}
    assert rows["golden-base"]["up_to_date"] is True
    real_render = freshness.render_recipe

    def newer_render(recipe, out_root):  # type: ignore[no-untyped-def]
        rendered = real_render(recipe, out_root)
        user_data = rendered.files["user-data"]
        user_data.write_text(user_data.read_text() + "# imgbuild 99.0 writes this line\n")
        return rendered

    monkeypatch.setattr(freshness, "render_recipe", newer_render)
    monkeypatch.setattr(freshness, "__version__", "99.0")
    rows = {r["name"]: r for r in status(recipes, out, capsys)["vms"]}
    assert rows["golden-base"]["up_to_date"] is False
    assert rows["golden-base"]["why"] == ["newer imgbuild (0.1.0 -> 99.0)"]

    capsys.readouterr()
    assert main([*base, "status", "--target", "sim"]) == 0
    text = capsys.readouterr().out
    assert "UP TO DATE" in text and "no: recipe changed; newer image" in text
