"""The CLI as a user meets it: help everywhere, JSON output, global options, clean errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.cli.main import build_parser
from builder.render.guard import UnsafeValue, debconf_value
from tests.recipe.conftest import SHIPPED

SUBCOMMANDS = sorted(build_parser()._subparsers._group_actions[0].choices)  # type: ignore[union-attr]


def test_top_level_help(imgbuild) -> None:
    result = imgbuild("--help")
    assert result.returncode == 0
    for name in SUBCOMMANDS:
        assert name in result.stdout


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_every_subcommand_has_help(imgbuild, command: str) -> None:
    result = imgbuild(command, "--help")
    assert result.returncode == 0 and f"usage: imgbuild {command}" in result.stdout


def test_list_text_and_json(imgbuild) -> None:
    text = imgbuild("list")
    assert text.returncode == 0 and "web-server" in text.stdout and "static" in text.stdout
    data = json.loads(imgbuild("list", "--json").stdout)
    assert sorted(d["name"] for d in data) == SHIPPED and all(d["valid"] for d in data)


def test_show_is_fully_resolved(imgbuild) -> None:
    data = json.loads(imgbuild("show", "--json", "web-server").stdout)
    assert data["name"] == "web-server" and data["hostname"] == "web-server"
    assert data["network"]["address"] == "192.168.1.250/24" and data["network"]["mac"].startswith("BC:24:11:")
    assert data["users"][0]["name"] == "admin"  # from base.yaml
    assert data["disk"]["size_bytes"] == 8 << 30 and data["vm"]["cpu"] == "kvm64"
    text = imgbuild("show", "lxde-desktop").stdout
    assert "display: qxl" in text and "mode: nat" in text


def test_render_uses_out_dir(imgbuild, out: Path) -> None:
    result = imgbuild("render", "--json", "ssh-server")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert Path(data[0]["out_dir"]) == out / "ssh-server"
    assert sorted(data[0]["files"]) == sorted(["preseed.cfg", "user-data", "meta-data", "network-config", "known_hosts"])


def test_unknown_recipe_is_a_clean_error(imgbuild) -> None:
    result = imgbuild("show", "web-sever")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "no such recipe" in result.stderr and "web-server" in result.stderr


def test_recipes_dir_option(imgbuild, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    result = imgbuild("--recipes-dir", str(empty), "list")
    assert result.returncode == 0 and f"no recipes in {empty}" in result.stdout


@pytest.mark.parametrize("value", ["a\nb", "a\rb", "tab\there", "x\\", "\x7f", "\u2028"])
def test_preseed_guard_refuses_line_breaking_values(value: str) -> None:
    with pytest.raises(UnsafeValue):
        debconf_value(value)


def test_preseed_guard_passes_plain_values() -> None:
    assert debconf_value("web-server") == "web-server"
    assert debconf_value(True) == "true" and debconf_value(None) == ""
