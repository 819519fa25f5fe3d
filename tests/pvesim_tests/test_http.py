"""The HTTP layer: auth, PVE's error shapes, limits, TLS, and the simulator run as a process."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

from tests.pvesim.simulator import PveSimulator
from tests.pvesim_tests.conftest import Client

REPO = Path(__file__).resolve().parents[2]


def test_unknown_parameter_gets_pves_exact_400(pve: Client) -> None:
    with pve.sim.expecting_rejection("schema") as rejected:
        resp = pve.post("/nodes/pve/qemu", vmid=100, foo=1)
    assert resp.status_code == 400
    assert resp.reason == "Parameter verification failed."
    assert resp.json() == {
        "data": None,
        "errors": {"foo": "property is not defined in schema and the schema does not allow additional properties"},
    }
    assert rejected[0].path == "/nodes/pve/qemu" and "foo" in rejected[0].errors
    assert resp.headers["Connection"] == "close"


def test_unknown_path_is_501_and_says_whether_pve_has_it(pve: Client) -> None:
    with pve.sim.expecting_rejection("not-implemented") as rejected:
        resp = pve.get("/nodes/pve/qemu/100/snapshot")
    assert (resp.status_code, resp.reason) == (501, "Method 'GET /nodes/pve/qemu/100/snapshot' not implemented")
    assert resp.json() == {"data": None}
    assert "not simulated by pvesim" in rejected[0].errors["_"]
    with pve.sim.expecting_rejection("not-implemented") as rejected:
        resp = pve.post("/nodes/pve/qemu/100/status/explode")
    assert f"not a PVE {pve.sim.version} API method" in rejected[0].errors["_"]


def test_query_parameters_override_the_body(pve: Client) -> None:
    upid = pve.data("post", "/nodes/pve/qemu", vmid=100, name="from-body")
    pve.ok(upid)
    resp = pve.request("PUT", "/nodes/pve/qemu/100/config", params={"name": "from-query"}, data={"name": "from-body"})
    assert resp.status_code == 200 and resp.json() == {"data": None}
    assert pve.data("get", "/nodes/pve/qemu/100/config")["name"] == "from-query"


def test_json_bodies_are_accepted_and_json_booleans_pass(pve: Client) -> None:
    resp = pve.request("POST", "/nodes/pve/qemu", json={"vmid": 100, "onboot": True, "cores": 2})
    assert resp.status_code == 200, resp.text
    pve.ok(resp.json()["data"])
    assert pve.data("get", "/nodes/pve/qemu/100/config")["onboot"] == 1


def test_bad_or_missing_token_is_401_after_a_delay_and_secret_never_logged(pve_sim: PveSimulator) -> None:
    client = Client(pve_sim)
    secret = pve_sim.token.secret
    client.session.headers["Authorization"] = f"PVEAPIToken={pve_sim.token.full_id}=wrong-secret"
    t0 = time.monotonic()
    resp = client.get("/version")
    assert (resp.status_code, resp.reason) == (401, "authentication failure")
    assert time.monotonic() - t0 >= pve_sim.auth_delay
    del client.session.headers["Authorization"]
    assert client.get("/version").reason == "No ticket"
    good = Client(pve_sim)
    assert good.data("get", "/version")["release"] == pve_sim.version
    good.post("/nodes/pve/qemu", vmid=100, cipassword="hunter2")
    assert good.data("get", "/nodes/pve/qemu/100/config")  # created (after the task)
    text = json.dumps(pve_sim.state()) + repr(pve_sim.requests)
    assert secret not in text and "hunter2" not in text
    assert any(r.params.get("cipassword") == "***" for r in pve_sim.requests)


def test_tokens_need_no_csrf_and_cookies_are_not_tickets(pve_sim: PveSimulator) -> None:
    client = Client(pve_sim)
    assert client.post("/nodes/pve/qemu", vmid=100).status_code == 200  # no CSRFPreventionToken header
    del client.session.headers["Authorization"]
    client.session.headers["Cookie"] = "PVEAuthCookie=PVE:root@pam:0000::sig"
    assert client.get("/version").status_code == 401


def test_body_limit_and_chunked_transfer(pve: Client) -> None:
    with pve.sim.expecting_rejection("body-too-large"):
        resp = pve.post("/nodes/pve/qemu", vmid=100, description="x" * (512 * 1024 + 1))
    assert (resp.status_code, resp.reason) == (501, "for data too large")
    with pve.sim.expecting_rejection("transfer-encoding"):
        resp = pve.request("POST", "/nodes/pve/qemu", data=iter([b"vmid=100"]))
    assert (resp.status_code, resp.reason) == (501, "chunked transfer encoding not supported")


def test_tls_pinning_fingerprint_and_ca(pve_sim: PveSimulator) -> None:
    ctx = ssl.create_default_context(cafile=str(pve_sim.ca_file))
    with (socket.create_connection((pve_sim.host, pve_sim.port), timeout=10) as raw,
          ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls):
        der = tls.getpeercert(binary_form=True)
    digest = hashlib.sha256(der).hexdigest().upper()
    assert pve_sim.fingerprint == ":".join(digest[i : i + 2] for i in range(0, 64, 2))
    # without the CA, verification fails like against any self-signed PVE node
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(pve_sim.api_url + "/version", timeout=10)


def test_runs_as_a_subprocess_with_control_endpoints(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    token = "root@pam!bench=s3cr3t-value"
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.pvesim", "--port", "0", "--token", token, "--data-dir", str(tmp_path / "d")],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        assert proc.stdout is not None
        info = json.loads(proc.stdout.readline())
        assert info["fingerprint"] and Path(info["ca_file"]).exists() and "s3cr3t" not in json.dumps(info)
        s = requests.Session()
        s.trust_env = False
        s.verify = info["ca_file"]
        s.headers["Authorization"] = f"PVEAPIToken={token}"
        assert s.get(info["api_url"] + "/version", timeout=10).json()["data"]["version"].startswith("9.1")
        rule = s.post(info["url"] + "/_pvesim/faults", json={"kind": "http_error", "method": "GET",
                                                              "path": "/version$", "status": 503, "message": "busy"}).json()
        assert rule["data"]["kind"] == "http_error"
        resp = s.get(info["api_url"] + "/version", timeout=10)
        assert (resp.status_code, resp.reason) == (503, "busy")
        assert s.get(info["api_url"] + "/version", timeout=10).status_code == 200
        state = s.get(info["url"] + "/_pvesim/state", timeout=10).json()["data"]
        assert [r["status"] for r in state["requests"] if r["path"] == "/version"] == [200, 503, 200]
        assert state["faults"][0]["hits"] == 1
        assert requests.get(info["url"] + "/_pvesim/state", verify=info["ca_file"], timeout=10).status_code == 401
    finally:
        proc.terminate()
        proc.wait(10)
    assert proc.returncode == 0
    assert not (tmp_path / "d" / "tmp").exists() or not list((tmp_path / "d" / "tmp").iterdir())
