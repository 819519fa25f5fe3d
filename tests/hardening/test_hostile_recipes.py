"""Hostile recipes end in exit 2 with a located message, in bounded memory, never a traceback.

Each case is a file a probe (or an attacker sharing a recipes directory) could hand to ``validate``,
``list`` or ``render``: alias bombs, recursive documents, deep nesting, huge files, numbers and sizes
beyond reason, bytes that are not UTF-8, ``extends`` pointing at files that are not recipes.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from tests.hardening.conftest import MEMORY_BOUND, REPO, assert_no_traceback, cli, cli_measured


def bomb(levels: int = 9, width: int = 9) -> str:
    lines = [f"l0: &l0 [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        lines.append(f"l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * width)}]")
    return "\n".join(lines) + "\n"


def alias_chain(n: int) -> str:
    """Each anchor nests the previous one: shallow as written, n deep once expanded."""
    return "x0: &x0 [1]\n" + "".join(f"x{i}: &x{i} [*x{i - 1}]\n" for i in range(1, n))


def merge_bomb(levels: int = 12) -> str:
    lines = ["m0: &m0 {a: 1, b: 2, c: 3}"]
    for i in range(1, levels):
        lines.append(f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}, *m{i - 1}], k{i}: 1}}")
    return "\n".join(lines) + "\n"


CASES: dict[str, tuple[bytes, str]] = {
    "billion laughs": (bomb().encode(), "expands to more than"),
    "recursive alias": (b"a: &a [*a]\n", "recursive document"),
    "recursive mapping": (b"a: &a {b: *a}\n", "recursive document"),
    "recursive merge": (b"a: &a {<<: *a}\n", "recursive document"),
    "merge bomb": (merge_bomb().encode(), "merge keys (<<)"),
    "deep nesting": (b"[" * 5000 + b"]" * 5000 + b"\n", "nested more than"),
    "deep mappings": (b"".join(b"  " * i + b"k:\n" for i in range(200)) + b"  " * 200 + b"v\n", "nested more than"),
    "aliases nesting deep": (alias_chain(3000).encode(), "nested more than"),
    "many values": (b"[" + b"1," * 30000 + b"1]\n", "more than 20000 values"),
    "huge file": (b"description: '" + b"x" * (300 * 1024) + b"'\n", "larger than 256 KiB"),
    "huge unknown keys": (b"".join(b"k%d: 1\n" % i for i in range(60000)), "larger than 256 KiB"),
    "not utf-8": (b"description: caf\xe9\n", "not UTF-8"),
    "utf-16": ("hostname: web\n".encode("utf-16"), "not UTF-8"),
    "nul byte": (b"hostname: web\x00\n", "YAML"),
    "control character": (b"hostname: \"web\\x1b[2J\"\n", "control character"),
    "5000-digit integer": (b"vm:\n  cores: " + b"9" * 5000 + b"\n", "more digits"),
    "400-digit disk size": (b"extends: base\ndisk:\n  size: " + b"9" * 400 + b"G\n", "absurdly large"),
    "400-digit memory": (b"extends: base\nvm:\n  memory: " + b"9" * 400 + b"\n", "absurdly large"),
    "absurd memory": (b"extends: base\nvm:\n  memory: 999999999T\n", "at most 4T"),
    "absurd disk": (b"extends: base\ndisk:\n  size: 65T\n", "at most 64T"),
    "infinite float": (b"extends: base\nvm:\n  memory: .inf\n", "vm.memory"),
    "float size": (b"extends: base\ndisk:\n  size: 1e400\n", "disk.size"),
    "extends /etc/shadow": (b"extends: /etc/shadow\n", "must name a recipe"),
    "extends /etc/passwd by name": (b"extends: ../../../../../../etc/passwd\n", "must name a recipe"),
    "a key that is a mapping": (b"{a: 1}: 2\n", "a key must be a plain word"),
    "key file /dev/zero": (b"extends: base\nusers:\n  - name: admin\n    ssh_key_files: [/dev/zero]\n",
                           "not a regular file"),
    "huge key file": (b"extends: base\nusers:\n  - name: admin\n    ssh_key_files: [huge.pub]\n", "larger than 64 KiB"),
    "key file of secrets": (b"extends: base\nusers:\n  - name: admin\n    ssh_key_files: [/etc/shadow]\n",
                            "key 1: not an SSH public key"),
    "python tag": (b"hostname: !!python/object/apply:os.system ['true']\n", "unsupported YAML tag"),
    "python tag on a scalar": (b"hostname: !!python/name:os.system\n", "unsupported YAML value"),
}


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    path = tmp_path / "recipes"
    path.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", path)
    with open(path / "huge.pub", "wb") as fh:  # 4 GiB, sparse: an "SSH key file" nobody should read whole
        fh.truncate(4 << 30)
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_recipe_is_refused_with_a_located_message(case: str, recipes: Path, tmp_path: Path) -> None:
    text, expected = CASES[case]
    (recipes / "hostile.yaml").write_bytes(text)
    for command in ("validate", "render"):
        proc, peak = cli_measured(command, "hostile", out=tmp_path / "out", recipes=recipes)
        assert proc.returncode == 2, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        assert_no_traceback(proc)
        assert expected in proc.stdout + proc.stderr, (command, proc.stdout[-2000:], proc.stderr[-2000:])
        assert "hostile.yaml" in proc.stdout + proc.stderr  # located: the file (and line, where there is one)
        assert peak < MEMORY_BOUND, f"{command}: peak RSS {peak >> 20} MiB"
    assert not (tmp_path / "out" / "hostile").exists() or not any((tmp_path / "out" / "hostile").iterdir())


def test_one_hostile_recipe_does_not_take_list_down(recipes: Path) -> None:
    (recipes / "bomb.yaml").write_text(bomb())
    shutil.copy(REPO / "recipes" / "web-server.yaml", recipes)
    proc, peak = cli_measured("list", recipes=recipes)
    assert proc.returncode == 0 and peak < MEMORY_BOUND, proc.stderr
    assert "INVALID" in proc.stdout and "web-server" in proc.stdout


def test_extends_never_reads_a_file_that_is_not_a_recipe(recipes: Path, tmp_path: Path) -> None:
    secret = tmp_path / "shadow"
    secret.write_text("root:$6$saltsalt$SECRETHASHVALUE:19000:0:99999:7:::\nadmin:$y$j9T$OTHERSECRET:19000::::::\n")
    (recipes / "linked.yaml").symlink_to(secret)  # a recipe name that leads to another file
    for ref in (str(secret), "linked", "linked.yaml", f"../{secret.name}"):
        (recipes / "child.yaml").write_text(f"extends: {ref}\n")
        proc = cli("validate", "child", recipes=recipes)
        assert proc.returncode == 2, proc.stderr
        assert "SECRETHASHVALUE" not in proc.stdout + proc.stderr and "OTHERSECRET" not in proc.stdout + proc.stderr
        assert "child.yaml:1: extends:" in proc.stdout
    proc = cli("validate", str(secret), recipes=recipes)  # named directly: refused too, unread
    assert proc.returncode == 2 and "SECRETHASHVALUE" not in proc.stdout + proc.stderr


def test_a_deep_extends_chain_is_a_located_error(recipes: Path) -> None:
    (recipes / "r0.yaml").write_text("extends: base\n")
    for i in range(1, 200):
        (recipes / f"r{i}.yaml").write_text(f"extends: r{i - 1}\n")
    proc = cli("validate", "r199", recipes=recipes)
    assert proc.returncode == 2 and "more than 16 recipes in one extends chain" in proc.stdout, proc.stderr[-2000:]
    assert_no_traceback(proc)
    assert cli("validate", "r10", recipes=recipes).returncode == 0


def test_corrupt_keys_and_password_hashes_are_clear_errors(tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"ADMIN_PW": "a password"}
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", recipes)
    (recipes / "pw.yaml").write_text("extends: base\nusers:\n  - name: admin\n    password_env: ADMIN_PW\n")
    assert cli("render", "pw", out=out, recipes=recipes, env=env).returncode == 0
    for name, garbage, expected in [
        ("password-hashes.json", b"{not json", "password-hashes.json"),
        ("password-hashes.json", b'["a list"]', "not a JSON object"),
        ("ssh_host_ed25519_key", b"-----BEGIN OPENSSH PRIVATE KEY-----\ngarbage\n", "ssh_host_ed25519_key"),
        ("id_ed25519", b"\x00\x01binary", "id_ed25519"),
    ]:
        good = (out / "pw" / name).read_bytes()
        (out / "pw" / name).write_bytes(garbage)
        proc = cli("render", "pw", out=out, recipes=recipes, env=env)
        assert proc.returncode == 1 and expected in proc.stderr and "remove it" in proc.stderr, proc.stderr
        assert_no_traceback(proc)
        (out / "pw" / name).write_bytes(good)
    assert cli("render", "pw", out=out, recipes=recipes, env=env).returncode == 0


def test_a_password_that_is_not_utf8_is_a_clear_error(tmp_path: Path) -> None:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", recipes)
    (recipes / "pw.yaml").write_text("extends: base\nusers:\n  - name: admin\n    password_env: ADMIN_PW\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PROXMOX_", "IMGBUILD_"))}
    env_bytes = {k.encode(): v.encode("utf-8", "surrogateescape") for k, v in env.items()}
    env_bytes[b"ADMIN_PW"] = b"caf\xe9-latin1"
    env_bytes[b"PYTHONPATH"] = str(REPO).encode()
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "builder", "--recipes-dir", str(recipes), "--out-dir",
                           str(tmp_path / "out"), "render", "pw"], env=env_bytes, capture_output=True, text=True,
                          timeout=120, check=False)
    assert proc.returncode == 2 and "ADMIN_PW is not UTF-8" in proc.stderr, proc.stderr
    assert_no_traceback(proc)
