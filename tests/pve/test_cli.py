"""The real CLI as a subprocess against the simulator: authentication and TLS failures, --insecure."""

from __future__ import annotations

from pathlib import Path

from tests.pve.conftest import SECRET_ENV, cli_env, imgbuild, write_targets_file
from tests.pvesim.simulator import PveSimulator


def test_wrong_token_is_a_clear_error_without_traceback_or_secret(pve_sim: PveSimulator, tmp_path: Path) -> None:
    wrong = "d2f1c0de-wrong-secret-3b9a"
    targets = write_targets_file(tmp_path / "targets.yaml", pve_sim)
    env = cli_env(tmp_path, IMGBUILD_TARGETS=str(targets), **{SECRET_ENV: wrong})
    proc = imgbuild("make", "web-server", "--target", "sim", env=env)
    assert proc.returncode == 1, proc.stderr
    assert f"imgbuild: error: authentication failed for token {pve_sim.token.full_id}" in proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert wrong not in proc.stderr + proc.stdout and pve_sim.token.secret not in proc.stderr + proc.stdout
    assert [r.status for r in pve_sim.requests] == [401]  # stopped at the first call, before any work


def test_wrong_token_from_the_environment(pve_sim: PveSimulator, tmp_path: Path) -> None:
    wrong = "env-wrong-secret-77aa"
    env = cli_env(tmp_path, PROXMOX_URL=pve_sim.url, PROXMOX_TOKEN_ID=pve_sim.token.full_id,
                  PROXMOX_TOKEN_SECRET=wrong, PROXMOX_NODE="pve", PROXMOX_FINGERPRINT=pve_sim.fingerprint)
    proc = imgbuild("destroy", "web-server", env=env)  # PROXMOX_URL set: the default target is pve
    assert proc.returncode == 1
    assert "authentication failed for token root@pam!imgbuild" in proc.stderr
    assert wrong not in proc.stderr + proc.stdout and "Traceback" not in proc.stderr


def test_wrong_fingerprint_is_refused(pve_sim: PveSimulator, tmp_path: Path) -> None:
    targets = write_targets_file(tmp_path / "targets.yaml", pve_sim, fingerprint="12" * 32)
    env = cli_env(tmp_path, IMGBUILD_TARGETS=str(targets), **{SECRET_ENV: pve_sim.token.secret})
    proc = imgbuild("destroy", "web-server", "--target", "sim", env=env)
    assert proc.returncode == 1
    assert "does not match the pinned fingerprint; refusing to talk to it" in proc.stderr
    assert pve_sim.requests == [] and "Traceback" not in proc.stderr


def test_insecure_warns_and_works(pve_sim: PveSimulator, tmp_path: Path) -> None:
    targets = write_targets_file(tmp_path / "targets.yaml", pve_sim, fingerprint=None)
    env = cli_env(tmp_path, IMGBUILD_TARGETS=str(targets), **{SECRET_ENV: pve_sim.token.secret})
    refused = imgbuild("destroy", "web-server", "--target", "sim", env=env)
    assert refused.returncode == 1 and "TLS: cannot verify the certificate" in refused.stderr
    proc = imgbuild("destroy", "web-server", "--target", "sim", "--insecure", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "NOT verified (--insecure)" in proc.stderr
    assert "no VM named web-server on sim: nothing to do" in proc.stdout


def test_config_errors_exit_2_naming_the_field(pve_sim: PveSimulator, tmp_path: Path) -> None:
    targets = write_targets_file(tmp_path / "targets.yaml", pve_sim, token_secret_env=None,
                                 token_secret="inline-secret-9c")
    env = cli_env(tmp_path, IMGBUILD_TARGETS=str(targets))
    proc = imgbuild("destroy", "x", "--target", "sim", env=env)
    assert proc.returncode == 2
    assert "targets.sim.token_secret: secrets do not belong in the targets file" in proc.stderr
    assert "inline-secret-9c" not in proc.stderr
