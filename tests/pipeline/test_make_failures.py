"""make fails loudly and honestly: a wrong expectation names the check and what it saw.

The recipe extends web-server, so its golden image is the same: make must reuse the cached image
(asserted from the report, not timed).
"""

from __future__ import annotations

import pytest

from builder.image import build_golden_image
from builder.pipeline import specs
from builder.recipe import load_recipe
from tests.pipeline.conftest import REPO, check_named, qemu_processes

pytestmark = pytest.mark.boot

WRONG_TEXT = """\
extends: web-server
description: web-server whose HTTP check expects the wrong page, and whose late commands break cron and fail
late_commands:
  - systemctl disable --now cron
  - test -e /this-late-command-fails
verify:
  - check: ssh
  - check: service
    name: cron
    timeout: 30
  - check: http
    port: 80
    path: /
    expect: Welcome to nginx!
    timeout: 60
"""


def test_wrong_http_text_fails_make_and_reuses_the_image(imgbuild) -> None:
    # The web-server image exists before make runs, whichever test module (or worker) built it first.
    build_golden_image(specs.image_spec(load_recipe("web-server", REPO / "recipes")))
    imgbuild.add_recipe("web-wrong", WRONG_TEXT)
    result = imgbuild("make", "web-wrong")
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    assert "3 check(s) failed: ssh, service cron, http :80/" in result.stderr
    assert "report.json" in result.stderr
    report = imgbuild.report("web-wrong")
    assert report["ok"] is False and report["failed_checks"] == ["ssh", "service cron", "http :80/"]
    http = check_named(report, "http :80/")
    assert "Welcome to nginx!" in http["expected"]
    assert http["seen"].startswith("HTTP 200") and "Apache2" in http["seen"]
    # A service the guest broke fails its check: with late commands, checks wait for cloud-init to finish.
    assert check_named(report, "service cron")["seen"] == "cron is inactive"
    # A late command that fails is an error of cloud-init's final stage: the ssh check fails on it, naming it.
    ssh = check_named(report, "ssh")
    assert not ssh["ok"] and "cloud-init status: error (" in ssh["seen"] and "scripts_user" in ssh["seen"], ssh
    assert "addresses 192.168.1.250/24" in ssh["seen"]  # the login itself worked
    assert report["cache"]["image"]["reused"] is True  # late commands need no image of their own
    verify = next(s for s in report["stages"] if s["name"] == "verify")
    assert verify["ok"] is False and "3 of 3 checks failed" in verify["detail"]
    # A failed make leaves no VM behind (no --keep-on-failure).
    assert report["vm"]["state"] == "destroyed after failure"
    assert qemu_processes(imgbuild.out) == []


def test_unknown_recipe_fails_before_anything_runs(imgbuild) -> None:
    result = imgbuild("make", "no-such-recipe")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown recipe: no-such-recipe; nothing was started" in result.stderr
