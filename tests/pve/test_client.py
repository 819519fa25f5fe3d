"""The API adapter against the simulator: TLS policies, token auth, retries, tasks and their failures."""

from __future__ import annotations

import logging
import time
from dataclasses import replace
from pathlib import Path

import pytest

from builder.targets.pve.client import PveAuthError, PveClient, PveError, PveTaskError, PveTaskTimeout
from builder.targets.pve.config import PveConfig
from builder.targets.pve.connect import open_pve_target, target_from_config
from tests.pvesim.simulator import PveSimulator


def config_for(sim: PveSimulator, **kw: object) -> PveConfig:
    base = PveConfig(name="sim", url=sim.url, token_id=sim.token.full_id, token_secret=sim.token.secret,
                     node=sim.node, fingerprint=sim.fingerprint, task_timeout=30)
    return replace(base, **kw)  # type: ignore[arg-type]


def test_pinned_fingerprint_and_ca_file_are_accepted(pve_sim: PveSimulator) -> None:
    assert PveClient(config_for(pve_sim)).get("/version")["release"] == pve_sim.version
    ca = config_for(pve_sim, fingerprint=None, ca_file=pve_sim.ca_file)
    assert PveClient(ca).get("/version")["release"] == pve_sim.version


def test_wrong_pinned_fingerprint_is_refused_before_any_request(pve_sim: PveSimulator) -> None:
    wrong = "AA:" * 31 + "AA"
    with pytest.raises(PveError) as err:
        PveClient(config_for(pve_sim, fingerprint=wrong)).get("/version")
    assert "does not match the pinned fingerprint" in err.value.message
    assert pve_sim.requests == []  # the token was never sent


def test_system_store_does_not_trust_the_simulator(pve_sim: PveSimulator) -> None:
    with pytest.raises(PveError, match="TLS: cannot verify the certificate"):
        PveClient(config_for(pve_sim, fingerprint=None)).get("/version")
    assert pve_sim.requests == []


def test_insecure_warns_and_connects(pve_sim: PveSimulator, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        target = target_from_config(config_for(pve_sim, fingerprint=None), insecure=True)
    assert target.check_connection()["release"] == pve_sim.version
    assert any("NOT verified (--insecure)" in r.getMessage() for r in caplog.records)


def test_wrong_token_is_a_clear_authentication_error(pve_sim: PveSimulator) -> None:
    bad = config_for(pve_sim, token_secret="not-the-secret-4f1e")
    with pytest.raises(PveAuthError) as err:
        target_from_config(bad)
    text = f"{err.value.message}\n{err.value.detail}"
    assert f"authentication failed for token {pve_sim.token.full_id}" in err.value.message
    assert "not-the-secret-4f1e" not in text and pve_sim.token.secret not in text


def test_get_retries_5xx_then_succeeds(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    rule = pve_sim.faults.http_error("GET", r"^/cluster/resources$", status=503, message="proxy busy", count=2)
    assert target.find_vm("nothing") is None
    assert rule.hits == 2


def test_get_gives_up_with_pve_message(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    pve_sim.faults.http_error("GET", r"^/cluster/resources$", status=503, message="proxy busy", count=None)
    with pytest.raises(PveError, match=r"GET /cluster/resources failed: proxy busy \(HTTP 503\)"):
        target.find_vm("nothing")


def test_post_5xx_is_not_retried(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    rule = pve_sim.faults.http_error("POST", r"/status/start$", status=500, message="cluster not ready - no quorum?")
    with pytest.raises(PveError, match="no quorum"):
        target.client.post("/nodes/pve/qemu/100/status/start")
    assert rule.hits == 1


def test_parameter_errors_carry_pve_errors_body(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    with pve_sim.expecting_rejection("schema"), pytest.raises(PveError) as err:
        target.client.post("/nodes/pve/qemu", vmid=100, net0="virtio=zz")
    assert "Parameter verification failed" in err.value.message
    assert "net0" in err.value.errors and "net0:" in err.value.detail


def test_booleans_are_sent_as_0_and_1(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    target.client.get("/nodes/pve/storage", enabled=True)
    assert pve_sim.requests[-1].params["enabled"] == "1"


def _start_task(target, pve_sim: PveSimulator) -> str:  # type: ignore[no-untyped-def]
    target.client.run("POST", "/nodes/pve/qemu", what="create", wait=10, vmid=100, name="t", memory="256")
    return target.client.post("/nodes/pve/qemu/100/status/start")


def test_failed_task_raises_with_message_and_log_tail(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    pve_sim.faults.fail_task("qmstart", message="start failed: QEMU exited with code 1",
                             log=("kvm: -drive file=/dev/pve/vm-100-disk-0: Could not open",))
    upid = _start_task(target, pve_sim)
    with pytest.raises(PveTaskError) as err:
        target.client.wait_task(upid, timeout=10, what="start of VM 100")
    assert err.value.message == "start of VM 100 failed on Proxmox VE: start failed: QEMU exited with code 1"
    assert upid in err.value.detail and "Could not open" in err.value.detail and "TASK ERROR" in err.value.detail


def test_task_outliving_its_deadline_is_stopped_and_named(target, pve_sim: PveSimulator) -> None:  # type: ignore[no-untyped-def]
    pve_sim.faults.hang_task("qmstart")
    upid = _start_task(target, pve_sim)
    t0 = time.monotonic()
    with pytest.raises(PveTaskTimeout) as err:
        target.client.wait_task(upid, timeout=1.0, what="start of VM 100")
    assert time.monotonic() - t0 < 15
    assert upid in err.value.message and "did not finish within 1s" in err.value.message
    assert "stopped" in err.value.detail
    assert pve_sim.running_tasks() == []


def test_open_by_name_checks_the_node(sim_env: PveSimulator, tmp_path: Path) -> None:
    from tests.pve.conftest import write_targets_file

    write_targets_file(tmp_path / "targets.yaml", sim_env, node="elsewhere")
    with pytest.raises(Exception, match="has no node 'elsewhere'"):
        open_pve_target("sim", tmp_path)
