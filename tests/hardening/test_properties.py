"""Attacks the tests generate themselves (Hypothesis): mutated shipped recipes, hostile YAML (aliases,
nesting, sizes, encodings, control characters) and symlinks in out/.

Every run of ``validate`` and ``render`` (the real CLI entry point, in-process) must end in exit status 0 or
2 - never a traceback - with Python's peak allocation under ALLOC_BOUND, no write outside ``out/NAME``, and
no secret (a password from the environment, a proxy's credentials) in any output, nor in any file another
user may read.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import stat
import tempfile
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from builder.cli.main import main
from tests.hardening.conftest import REPO

ALLOC_BOUND = 64 << 20  # bytes Python may allocate at peak for one validate or render of a hostile recipe
PASSWORD = "Env-Pa55word-xyzzy"
PROXY_SECRET = "Pr0xy-S3cret-plugh"
SECRETS = (PASSWORD, PROXY_SECRET)
SHIPPED = sorted(p.stem for p in (REPO / "recipes").glob("*.yaml"))
EXAMPLES = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@dataclass
class Outcome:
    status: int
    output: str
    peak: int


@contextlib.contextmanager
def sandbox() -> Iterator[Path]:
    """recipes/ (the shipped ones), out/, a victim/ directory outside out/, a private cache."""
    root = Path(tempfile.mkdtemp(prefix="hyp-"))
    try:
        shutil.copytree(REPO / "recipes", root / "recipes")
        (root / "out").mkdir()
        (root / "victim").mkdir()
        (root / "victim" / "authorized_keys").write_text("ssh-ed25519 AAAA the user's own\n")
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


def imgbuild(root: Path, *args: str) -> Outcome:
    """``imgbuild --recipes-dir root/recipes --out-dir root/out ARGS`` in this process: status, output, peak."""
    out, err = io.StringIO(), io.StringIO()
    env = {"IMGBUILD_CACHE": str(root / "cache"), "ALLFIELD_PW": PASSWORD}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    tracemalloc.start()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                status = main(["--recipes-dir", str(root / "recipes"), "--out-dir", str(root / "out"), *args])
            except SystemExit as exc:  # argparse
                status = int(exc.code or 0)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    return Outcome(status, out.getvalue() + err.getvalue(), peak)


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file outside out/ and cache/, with its content: what no run may change."""
    found = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if rel.parts[0] in ("out", "cache") or path.is_symlink() or not path.is_file():
            continue
        found[str(rel)] = path.read_bytes()
    return found


def assert_sound(root: Path, outcome: Outcome, before: dict[str, bytes]) -> None:
    assert outcome.status in (0, 2), outcome.output[-3000:]
    assert "Traceback" not in outcome.output, outcome.output[-3000:]
    assert outcome.peak < ALLOC_BOUND, f"peak allocation {outcome.peak >> 20} MiB"
    for secret in SECRETS:
        assert secret not in outcome.output
    after = snapshot(root)
    changed = {k for k in before.keys() | after.keys() if before.get(k) != after.get(k)}
    assert not changed, changed  # nothing outside out/ (and the cache) is written
    for path in (root / "out").rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert PASSWORD.encode() not in data, path  # plain passwords are never written, only hashes
            if stat.S_IMODE(path.stat().st_mode) & 0o077:
                assert PROXY_SECRET.encode() not in data, path  # readable by others: no secret


# --- mutated shipped recipes ---------------------------------------------------------------------

HOSTILE_SCALARS = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=10**20, max_value=10**400),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40), st.text(alphabet=st.characters(max_codepoint=0x1F), max_size=10),
    st.sampled_from(["../../etc/passwd", "/etc/shadow", "$(reboot)", "`id`", "a\nd-i passwd/root-login true",
                     "9" * 400 + "G", "999999999T", "-1", "0", "1e999", "ＷＥＢ", "\u202e", "%s%n", "{{ 7*7 }}",
                     "'; DROP TABLE", "x" * 5000]),
)
VALUES = st.recursive(HOSTILE_SCALARS, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


def paths_in(data: Any, prefix: tuple = ()) -> list[tuple]:
    found = [prefix] if prefix else []
    if isinstance(data, dict):
        for key, value in data.items():
            found += paths_in(value, (*prefix, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += paths_in(value, (*prefix, i))
    return found


def set_at(data: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        data = data[part]
    data[path[-1]] = value


@st.composite
def mutated_recipes(draw: st.DrawFn) -> tuple[str, str]:
    name = draw(st.sampled_from(SHIPPED))
    data = yaml.safe_load((REPO / "recipes" / f"{name}.yaml").read_text())
    data.setdefault("users", [{"name": "admin"}])
    data["mirror"] = {"host": "deb.debian.org", "path": "/debian", "proxy": f"http://u:{PROXY_SECRET}@proxy:3128/"}
    if isinstance(data.get("users"), list) and data["users"]:
        data["users"][0] = {**data["users"][0], "password_env": "ALLFIELD_PW"}
    for _ in range(draw(st.integers(1, 4))):
        choice = draw(st.sampled_from(["replace", "delete", "add"]))
        paths = paths_in(data)
        if choice == "replace" and paths:
            set_at(data, draw(st.sampled_from(paths)), draw(VALUES))
        elif choice == "delete" and paths:
            path = draw(st.sampled_from(paths))
            parent = data
            for part in path[:-1]:
                parent = parent[part]
            del parent[path[-1]]
        else:
            data[draw(st.text(min_size=1, max_size=20))] = draw(VALUES)
    text = yaml.safe_dump(data, allow_unicode=draw(st.booleans()), sort_keys=False)
    return name, text


@EXAMPLES
@given(mutated_recipes())
def test_mutated_shipped_recipes_are_handled(case: tuple[str, str]) -> None:
    _name, text = case
    with sandbox() as root:
        (root / "recipes" / "mutant.yaml").write_text(text, encoding="utf-8")
        before = snapshot(root)
        for command in ("validate", "render"):
            assert_sound(root, imgbuild(root, command, "mutant"), before)


# --- hostile YAML ----------------------------------------------------------------------------------

@st.composite
def hostile_yaml(draw: st.DrawFn) -> bytes:
    kind = draw(st.sampled_from(["aliases", "nesting", "merge", "recursive", "sizes", "encoding", "controls"]))
    if kind == "aliases":
        width, levels = draw(st.integers(2, 10)), draw(st.integers(2, 9))
        lines = [f"a0: &a0 [{', '.join(['x'] * width)}]"]
        lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * width)}]" for i in range(1, levels)]
        text = "extends: base\n" + "\n".join(lines) + "\ndescription: *a0\n"
    elif kind == "nesting":
        depth = draw(st.one_of(st.integers(1, 40), st.just(5000)))
        opener, closer = draw(st.sampled_from([("[", "]"), ("{a: ", "}")]))
        text = f"extends: base\npackages: {opener * depth}1{closer * depth}\n"
    elif kind == "merge":
        levels = draw(st.integers(1, 30))
        lines = ["m0: &m0 {hostname: web}"]
        lines += [f"m{i}: &m{i} {{<<: [*m{i - 1}, *m{i - 1}], x{i}: 1}}" for i in range(1, levels)]
        text = "\n".join(lines) + f"\nnetwork:\n  <<: *m{levels - 1}\n"
    elif kind == "recursive":
        text = draw(st.sampled_from(["a: &a [*a]\n", "a: &a {b: *a}\n", "a: &a {<<: *a}\n",
                                     "extends: base\nusers: &u [{name: admin, ssh_keys: *u}]\n"]))
    elif kind == "sizes":
        field = draw(st.sampled_from(["disk:\n  size", "vm:\n  memory", "vm:\n  cores", "network:\n  vlan"]))
        value = draw(st.one_of(st.integers(), st.integers(min_value=10**18, max_value=10**4000).map(str),
                               st.sampled_from([".inf", "-.inf", ".nan", "1e308T", "0x7fffffffffffffff", "0o777"])))
        text = f"extends: base\n{field}: {value}\n"
    elif kind == "encoding":
        raw = draw(st.sampled_from([b"\xff\xfehostname: web\n", b"\xef\xbb\xbfhostname: web\n",
                                    "hostname: web\n".encode("utf-16-le"), b"hostname: \xc3\x28\n"]))
        return b"extends: base\n" + raw if draw(st.booleans()) else raw
    else:
        text = "extends: base\n" + draw(st.sampled_from(["hostname", "description", "domain", "timezone"])) + \
            ": " + yaml.safe_dump(draw(st.text(alphabet=st.characters(max_codepoint=0x9F), max_size=30))).strip() + "\n"
    return text.encode("utf-8")


@EXAMPLES
@given(hostile_yaml())
def test_hostile_yaml_is_refused_or_inert(text: bytes) -> None:
    with sandbox() as root:
        (root / "recipes" / "hostile.yaml").write_bytes(text)
        before = snapshot(root)
        for command in ("validate", "render"):
            assert_sound(root, imgbuild(root, command, "hostile"), before)


# --- symlinks in out/ --------------------------------------------------------------------------------

LINKABLE = ["", "known_hosts", "user-data", "meta-data", "ssh_host_ed25519_key", "id_ed25519", "preseed.cfg",
            "password-hashes.json", ".lock"]


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from(LINKABLE), min_size=1, max_size=4, unique=True))
def test_symlinks_in_out_are_never_followed(links: list[str]) -> None:
    with sandbox() as root:
        (root / "recipes" / "pw.yaml").write_text(
            "extends: web-server\nusers:\n  - name: admin\n    password_env: ALLFIELD_PW\n"
            f"mirror:\n  proxy: http://u:{PROXY_SECRET}@proxy:3128/\n")
        name_dir = root / "out" / "pw"
        victim = root / "victim"
        if "" in links:
            name_dir.symlink_to(victim)
        else:
            name_dir.mkdir(mode=0o700)
            for name in links:
                (name_dir / name).symlink_to(victim / "authorized_keys")
        before = snapshot(root)
        outcome = imgbuild(root, "render", "pw")
        assert_sound(root, outcome, before)
        assert outcome.status == 2 and "symbolic link" in outcome.output, outcome.output
