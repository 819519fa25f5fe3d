"""Validation: every problem at once, each with file, line and field; exit 2; no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.recipe import check_recipe, load_recipe
from builder.recipe.problems import RecipeInvalid
from tests.recipe.conftest import SHIPPED, write_recipe


def problems_of(recipes: Path, text: str) -> list[str]:
    path = write_recipe(recipes, "t", text)
    return [p.format(base=recipes.parent) for p in check_recipe(path, recipes).problems]


def test_every_shipped_recipe_validates(imgbuild) -> None:
    result = imgbuild("validate")
    assert result.returncode == 0, result.stdout + result.stderr
    for name in SHIPPED:
        assert f"{name}.yaml: ok" in result.stdout


FIVE_MISTAKES = """\
extends: web-server
relase: bookworm
hostname: web_server
network:
  mode: static
  address: 192.168.1.250/24
  gateway: 10.0.0.1
tasks: [web-server, lxde-destkop]
disk:
  size: eight gigs
"""


def test_five_mistakes_reported_in_one_run_with_lines(imgbuild, recipes: Path) -> None:
    write_recipe(recipes, "five", FIVE_MISTAKES)
    result = imgbuild("validate", "five")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr + result.stdout
    lines = [ln for ln in result.stdout.splitlines() if ln.startswith("recipes/five.yaml:")]
    assert len(lines) == 5, result.stdout
    expected = [
        ("recipes/five.yaml:2: relase:", "did you mean 'release'"),
        ("recipes/five.yaml:3: hostname:", "RFC 1123"),
        ("recipes/five.yaml:7: network.gateway:", "outside the subnet 192.168.1.0/24"),
        ("recipes/five.yaml:8: tasks.1:", "did you mean 'lxde-desktop'"),
        ("recipes/five.yaml:10: disk.size:", "cannot parse size"),
    ]
    for line, (prefix, text) in zip(lines, expected, strict=False):
        assert line.startswith(prefix) and text in line, line


def test_validate_json(imgbuild, recipes: Path) -> None:
    write_recipe(recipes, "five", FIVE_MISTAKES)
    result = imgbuild("validate", "--json", "five", "web-server")
    assert result.returncode == 2
    data = json.loads(result.stdout)
    assert [d["valid"] for d in data] == [False, True]
    assert {p["line"] for p in data[0]["problems"]} == {2, 3, 7, 8, 10}
    assert data[0]["problems"][0]["field"] == "relase"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("vm:\n  display: spcie\n", "t.yaml:2: vm.display: 'spcie' is not a valid choice; did you mean 'spice'? "
                                    "(choose one of: auto, spice, qxl, std, virtio, none)"),
        ("release: sid\n", "t.yaml:1: release: 'sid' is not a valid choice (choose one of: trixie, bookworm)"),
        ("network:\n  mode: static\n", "t.yaml:1: network.address: required when network.mode is static"),
        ("network:\n  mode: static\n  address: 10.0.0.5/24\n", "network.gateway: required when network.mode is static"),
        ("network:\n  mode: static\n  address: 10.0.0.5/24\n  gateway: 10.0.0.5\n", "cannot be the guest's own"),
        ("network:\n  mode: static\n  address: 10.0.0.0/24\n  gateway: 10.0.0.1\n", "network or broadcast address"),
        ("network:\n  mode: static\n  address: 10.0.0.5\n  gateway: 10.0.0.1\n", "needs a prefix length"),
        ("network:\n  mode: dhcp\n  address: 10.0.0.5/24\n", "only used with mode static or nat"),
        ("network:\n  vlan: 5000\n", "network.vlan: 5000 is out of range (maximum 4094)"),
        ("network:\n  mac: 01:00:5e:00:00:01\n", "multicast"),
        ("network:\n  nameservers: [1.2.3]\n", "network.nameservers.0: '1.2.3' is not an IP address"),
        ("netwrok: {}\n", "t.yaml:1: netwrok: unknown field; did you mean 'network'?"),
        ("vm:\n  cores: two\n", "vm.cores: expected integer, got string 'two'"),
        ("vm:\n  memory: 100M\n", "vm.memory: memory must be at least 512M"),
        ("disk:\n  size: 1G\n", "disk.size: the disk must be at least 2G"),
        ("hostname: -web\n", "hostname: '-web' is not a valid host name"),
        ("hostname: " + "a" * 64 + "\n", "is not a valid host name"),
        ("domain: lab..internal\n", "is not a valid DNS domain"),
        ("timezone: Mars/Olympus\n", "unknown time zone 'Mars/Olympus'"),
        ("tasks: [kde-destop]\n", "did you mean 'kde-desktop'"),
        ("packages: [Apache2]\n", "'Apache2' is not a Debian package name"),
        ("users:\n  - name: root\n", "users.0.name: 'root' is a system account name"),
        ("users:\n  - name: a\n  - name: a\n", "users.1.name: user 'a' is listed twice"),
        ("users:\n  - name: a\n    password_hash: hunter2\n", "not a SHA-512 crypt"),
        ("users:\n  - name: a\n    ssh_keys: [ssh-ed25519 notbase64!]\n", "does not decode"),
        ("users:\n  - name: a\n    ssh_key_files: [nope.pub]\n", "file not found"),
        ("users:\n  - name: a\n    shel: /bin/sh\n", "users.0.shel: unknown field; did you mean 'shell'?"),
        ("users:\n  - full_name: x\n", "users.0.name: required field is missing"),
        ("root:\n  login: true\n", "root login needs root.password_hash or root.password_env"),
        ("verify:\n  - check: service\n", "a service check needs the unit name"),
        ("verify:\n  - check: http\n    path: index.html\n", "is not a URL path starting with /"),
        ("verify:\n  - check: ssh\n    port: 22\n", "not used by a ssh check"),
        ("verify:\n  - check: desktop\n", "needs a desktop task"),
        ("tasks: [lxde-desktop]\ndesktop:\n  autologin: admn\n",
         "desktop.autologin: no user 'admn' in users; did you mean 'admin'? (users: admin)"),
        ("desktop:\n  autologin: admin\n", "desktop.autologin: autologin needs a desktop task"),
        ("tasks: [xfce-desktop]\ndesktop:\n  autologin: admin\n",
         "desktop.autologin: autologin is supported for lxde-desktop (lightdm)"),
        ("tasks: [lxde-desktop, kde-desktop]\ndesktop:\n  autologin: admin\n", "autologin is supported for"),
        ("desktop:\n  autologn: admin\n", "desktop.autologn: unknown field; did you mean 'autologin'?"),
        ("mirror:\n  proxy: ftp://x\n", "not a proxy URL"),
        ("extends: nowhere\n", "t.yaml:1: extends: recipe 'nowhere' not found"),
        ("a: [1\n", "t.yaml:2: YAML syntax error"),
        ("release: trixie\nrelease: bookworm\n", "t.yaml:2: release: duplicate key"),
        ("- just\n- a list\n", "a recipe must be a mapping"),
    ],
)
def test_bad_values_are_reported(recipes: Path, text: str, expected: str) -> None:
    found = problems_of(recipes, text)
    assert any(expected in p for p in found), found


def test_extends_merges_mappings_and_reports_child_lines(recipes: Path) -> None:
    write_recipe(recipes, "child", "extends: web-server\nnetwork:\n  gateway: 192.168.2.1\n")
    found = problems_of(recipes, "extends: child\ndescription: x\n")
    # The bad gateway is reported where it was written: in child.yaml, line 3.
    assert any(p.startswith("recipes/child.yaml:3: network.gateway:") for p in found), found
    write_recipe(recipes, "child", "extends: web-server\nnetwork:\n  bridge: vmbr7\n")
    recipe = load_recipe("child", recipes)
    assert recipe.name == "child"  # never inherited
    assert recipe.network.bridge == "vmbr7" and recipe.network.address == "192.168.1.250/24"
    assert recipe.tasks == ("web-server", "ssh-server", "standard")


def test_extends_cycle(recipes: Path) -> None:
    write_recipe(recipes, "a", "extends: b\n")
    write_recipe(recipes, "b", "extends: a\n")
    with pytest.raises(RecipeInvalid, match="extends cycle: a -> b -> a"):
        load_recipe("a", recipes)


def test_invalid_recipe_exits_2_without_traceback_unless_debug(imgbuild, recipes: Path) -> None:
    write_recipe(recipes, "bad", "hostname: 'x y'\n")
    for cmd in (["show", "bad"], ["render", "bad"]):
        result = imgbuild(*cmd)
        assert result.returncode == 2
        assert "Traceback" not in result.stderr
        assert "bad.yaml:1: hostname:" in result.stderr
    debug = imgbuild("--debug", "show", "bad")
    assert "Traceback" in debug.stderr


def test_resolved_values(recipes: Path) -> None:
    web = load_recipe("web-server", recipes)
    assert web.network.mac.startswith("BC:24:11:") and not web.network.mac_given
    assert web.vm.display == "std" and web.disk.size_bytes == 8 << 30 and web.vm.memory_mib == 2048
    desk = load_recipe("lxde-desktop", recipes)
    assert desk.vm.display == "qxl" and desk.vm.spice
    assert desk.desktop.autologin == "admin" and desk.desktop.session is not None
    assert desk.desktop.session.name == "LXDE" and desk.desktop.session.panel == "lxpanel"
    assert web.desktop.autologin is None and web.desktop.session is None
    assert load_recipe("web-server", recipes).network.mac == web.network.mac  # stable
