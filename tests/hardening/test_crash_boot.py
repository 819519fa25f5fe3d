"""Crash consistency with real guests and real image builds (boot tests; see test_crash_consistency.py).

- An image build (``make --refresh-image``) killed early in mmdebstrap: SIGTERM stops mmdebstrap and removes
  the work directory; after SIGKILL mmdebstrap is stopped by the kernel (PR_SET_PDEATHSIG) and the next
  build removes the directory. Either way no mount is left under it: mmdebstrap runs in a mount
  namespace of its own, which the kernel tears down with its last process. The cached image is never
  touched: it is only replaced by a finished build.
- ``make`` killed while its guest boots: SIGTERM destroys the VM and its staged seed (exit 143); after
  SIGKILL the VM keeps running with its seed, and the next ``make`` verifies it, then detaches and removes
  the seed and shuts it down.
"""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

from builder.cachedir import sha256_file
from builder.image.build import build_golden_image, image_path
from builder.pipeline import specs
from builder.recipe import load_recipe
from tests.hardening.conftest import REPO
from tests.hardening.crash import exit_status, parts_under, start
from tests.hardening.forked import poll
from tests.hardening.procs import mounts_under, processes_mentioning

pytestmark = pytest.mark.boot


def work_dirs(final: Path) -> list[Path]:
    return sorted(final.parent.glob(f".build-{final.stem}-*"))


@pytest.mark.parametrize("when", ["mmdebstrap starts", "dpkg runs"])
@pytest.mark.parametrize("sig", ["SIGTERM", "SIGKILL"])
def test_image_build_killed_in_mmdebstrap(sig: str, when: str, tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("image builds need root (mmdebstrap --mode=root): run the boot tests as root, as CI does")
    spec = specs.image_spec(load_recipe("web-server", REPO / "recipes"))
    final = image_path(spec)
    before = sha256_file(final) if final.exists() else None
    out = tmp_path / "out"

    proc = start(out, "make", "web-server", "--refresh-image")
    wanted = "mmdebstrap" if when == "mmdebstrap starts" else "dpkg"  # early, or deep in the chroot's work
    mmdebstrap = poll(when, lambda: [p for p in processes_mentioning(f".build-{final.stem}-") if wanted in p[1]],
                      timeout=900, interval=0.02)
    (work,) = work_dirs(final)
    proc.send_signal(signal.SIGTERM if sig == "SIGTERM" else signal.SIGKILL)
    status = exit_status(proc, 300)
    # either way, nothing of the build keeps running (after SIGKILL: mmdebstrap got SIGTERM from the kernel)
    assert poll("mmdebstrap to stop", lambda: not processes_mentioning(str(work)), timeout=120), mmdebstrap
    assert mounts_under(work) == []
    if sig == "SIGTERM":
        stderr = proc.output()
        assert status == 143 and "imgbuild: terminated (SIGTERM)" in stderr, stderr[-3000:]
        assert not work.exists()
        report = json.loads((out / "web-server" / "report.json").read_text())
        assert report["error"].startswith("Terminated") and report["stages"][-1]["name"] == "image"
    else:
        assert status == 137 and work.exists()  # SIGKILL runs no cleanup: the next build's job
        again = start(out, "make", "web-server", "--refresh-image")
        poll("the next build's mmdebstrap", lambda: [p for p in processes_mentioning(f".build-{final.stem}-")
                                                     if "mmdebstrap" in p[1]], timeout=900)
        assert not work.exists()  # the debris of the killed build is gone
        again.send_signal(signal.SIGTERM)
        assert exit_status(again, 300) == 143
        assert poll("no build left", lambda: not work_dirs(final), timeout=120)
    # the cached image is what it was: a killed build never replaces it
    assert (sha256_file(final) if final.exists() else None) == before
    if before is not None:
        assert build_golden_image(spec).cached
    assert parts_under(out) == []


def qemu_of(out: Path) -> list[tuple[int, str]]:
    return [p for p in processes_mentioning(str(out)) if "qemu-system" in p[1]]


def staged_seeds(out: Path) -> list[Path]:
    return sorted((out / ".staged").glob("*-web-server-seed.iso")) if (out / ".staged").exists() else []


def test_make_killed_while_booting(tmp_path: Path) -> None:
    out = tmp_path / "out"
    # SIGTERM: the VM this run created is destroyed, its seed removed, exit 143
    proc = start(out, "make", "web-server")
    poll("QEMU", lambda: qemu_of(out), timeout=1800)
    assert staged_seeds(out)
    proc.send_signal(signal.SIGTERM)
    assert exit_status(proc, 300) == 143
    assert poll("QEMU to stop", lambda: not qemu_of(out), timeout=60)
    assert not (out / "web-server" / "vm").exists() and staged_seeds(out) == [] and parts_under(out) == []
    assert json.loads((out / "web-server" / "report.json").read_text())["error"].startswith("Terminated")

    # SIGKILL: no cleanup can run; the guest keeps booting with its seed attached. Killed once QEMU has
    # daemonized and the guest boots (a kill while QEMU is still starting takes QEMU's parent with it:
    # then there is no guest, and the next make starts one)
    proc = start(out, "make", "web-server")
    poll("the guest to boot", lambda: qemu_of(out) and "waiting for the guest agent" in proc.output(), timeout=600)
    proc.send_signal(signal.SIGKILL)
    assert exit_status(proc) == 137
    assert qemu_of(out) and staged_seeds(out)

    # make again: the VM is up to date; it is verified, then its seed is detached and removed, and it is
    # shut down. Nothing is left running, nothing staged, no part file.
    again = start(out, "make", "web-server")
    assert exit_status(again, 1800) == 0, again.output()[-3000:]
    report = json.loads((out / "web-server" / "report.json").read_text())
    assert report["ok"] and report["vm"]["reused"] is True and all(c["ok"] for c in report["checks"])
    state = json.loads((out / "web-server" / "vm" / "state.json").read_text())
    assert state["cdroms"] == [None] and staged_seeds(out) == []
    assert poll("QEMU to stop", lambda: not qemu_of(out), timeout=60)
    assert parts_under(out) == []
    destroy = start(out, "destroy", "web-server")
    assert exit_status(destroy) == 0
