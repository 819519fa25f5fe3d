"""The ssh check's cloud-init verdict, read from the files `cloud-init status` reads (the CLI costs seconds of
Python start-up under TCG). Agreement with the CLI itself is asserted in a real guest
(tests/pipeline/test_make_web_server.py); here: every answer the guest can give, through a real shell."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

from builder.verify.checks import CLOUD_INIT_RESULT, cloud_init_status


def guest_answer(root: Path, *, enabled: bool = True, disabled_file: bool = False, result: dict | None = None,
                 timeout: float = 5) -> str:
    """CLOUD_INIT_RESULT run by sh against a guest tree under *root* (its paths rewritten there)."""
    run_dir = root / "run/cloud-init"
    run_dir.mkdir(parents=True, exist_ok=True)
    (root / "etc/cloud").mkdir(parents=True, exist_ok=True)
    if enabled:
        (run_dir / "enabled").touch()
    if disabled_file:
        (root / "etc/cloud/cloud-init.disabled").touch()
    if result is not None:
        (run_dir / "result.json").write_text(json.dumps(result))
    command = CLOUD_INIT_RESULT.replace("/run/", f"{root}/run/").replace("/etc/", f"{root}/etc/")
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout, check=True).stdout


def test_a_finished_first_boot_without_errors_is_done(tmp_path: Path) -> None:
    out = guest_answer(tmp_path, result={"v1": {"datasource": "DataSourceNoCloud [seed=/dev/sr0]", "errors": []}})
    assert cloud_init_status(out) == "status: done"


def test_errors_of_any_stage_fail_and_are_named(tmp_path: Path) -> None:
    errors = ["('scripts_user', RuntimeError('Runparts: 1 failures (part-001) in 1 attempted commands'))"]
    out = guest_answer(tmp_path, result={"v1": {"datasource": "DataSourceNoCloud", "errors": errors}})
    status = cloud_init_status(out)
    assert status.startswith("status: error (") and "part-001" in status


@pytest.mark.parametrize("enabled, disabled_file", [(False, False), (True, True)])
def test_a_boot_on_which_cloud_init_does_not_run_is_disabled(tmp_path: Path, enabled: bool,
                                                             disabled_file: bool) -> None:
    assert cloud_init_status(guest_answer(tmp_path, enabled=enabled, disabled_file=disabled_file)) == "status: disabled"


def test_it_waits_while_cloud_init_runs(tmp_path: Path) -> None:
    with pytest.raises(subprocess.TimeoutExpired):  # enabled, no result yet: still running
        guest_answer(tmp_path, timeout=2)


def test_an_unreadable_result_is_not_done() -> None:
    assert cloud_init_status('{"v1": {}}').startswith("status unknown")
    assert cloud_init_status("not json").startswith("status unknown")
    assert cloud_init_status('{"v1": {"errors": "boom"}}').startswith("status unknown")
