"""Crash consistency: imgbuild killed (SIGTERM, what systemd and CI send; SIGKILL, which runs no cleanup) at
several points, then run again. SIGTERM exits 143 after the same cleanup as Ctrl-C; after either, the re-run
gives the right result and nothing is left behind: no orphan process, no ``.part`` file, no seed staged.

``build`` is cheap and fully covered here; an image build is killed early in mmdebstrap, and ``make`` while
its guest boots (boot tests: they take the machine-wide heavy lock in CI's way, see README). PVE's side is
tests/hardening/test_terminate_pve.py.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.hardening.conftest import REPO
from tests.hardening.crash import SIGNALS, exit_status, parts_under, sha256sums, start
from tests.hardening.forked import poll
from tests.hardening.procs import processes_mentioning


@pytest.fixture(scope="module")
def clean_build(tmp_path_factory: pytest.TempPathFactory) -> str:
    """SHA256SUMS of an uninterrupted build (the ISOs are reproducible; the keys are reused below)."""
    out = tmp_path_factory.mktemp("clean") / "out"
    proc = start(out, "build", "web-server")
    assert exit_status(proc, 600) == 0, proc.output()
    return str(out)


@pytest.mark.parametrize("sig", sorted(SIGNALS))
def test_build_killed_while_writing_the_installer_iso(sig: str, clean_build: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    (out / "web-server").mkdir(parents=True, mode=0o700)
    for name in ("ssh_host_ed25519_key", "ssh_host_ed25519_key.pub", "id_ed25519", "id_ed25519.pub"):
        (out / "web-server" / name).write_bytes((Path(clean_build) / "web-server" / name).read_bytes())
        (out / "web-server" / name).chmod(0o600)
    for _attempt in range(20):  # the write takes a fraction of a second: catch it in the act
        (out / "web-server" / "installer.iso").unlink(missing_ok=True)
        proc = start(out, "build", "web-server")
        caught = False
        while proc.poll() is None:
            if list((out / "web-server").glob(".installer.iso.*.part")):
                proc.send_signal(SIGNALS[sig])
                caught = True
                break
            time.sleep(0.002)
        status = exit_status(proc)
        if caught and status != 0:
            break
    else:
        pytest.fail("never caught build writing installer.iso")
    stderr = proc.output()
    if sig == "SIGTERM":
        assert status == 143 and "imgbuild: terminated (SIGTERM)" in stderr and "Traceback" not in stderr, stderr
        assert parts_under(out) == []  # cleaned up at once
    else:
        assert status == 137 and parts_under(out)  # SIGKILL: the half-written ISO is left ...
    assert not (out / "web-server" / "installer.iso").exists()  # ... never under the final name

    time.sleep(2.1)  # sweep_parts leaves parts younger than 2 s alone (one may be being written)
    again = start(out, "build", "web-server")
    assert exit_status(again, 600) == 0, again.output()
    assert parts_under(out) == []  # the re-run swept the debris
    assert sha256sums(out) == sha256sums(Path(clean_build))  # and built the same ISOs


@pytest.mark.parametrize("sig", sorted(SIGNALS))
def test_a_killed_imgbuild_leaves_no_child_running(sig: str) -> None:
    """Every command imgbuild runs (builder.proc.run, mmdebstrap's runner) dies with it, even on SIGKILL,
    which runs no cleanup: the kernel sends the child SIGTERM (PR_SET_PDEATHSIG)."""
    tag = f"{os.getpid()}.{time.monotonic_ns() % 1000}"
    code = f"from builder.proc import run; run(['sleep', '{tag}'])"
    env = {k: v for k, v in os.environ.items() if not k.startswith("IMGBUILD_")} | {"PYTHONPATH": str(REPO)}
    parent = subprocess.Popen([sys.executable, "-c", code], env=env)
    poll("the child", lambda: processes_mentioning(f"sleep {tag}"), timeout=30)
    parent.send_signal(SIGNALS[sig])
    parent.wait(timeout=30)
    assert poll("the child to go", lambda: not processes_mentioning(f"sleep {tag}"), timeout=10)
