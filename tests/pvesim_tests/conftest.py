"""Fixtures for the simulator's own tests: the simulator (tests/pvesim/fixtures.py) and a client."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from tests.pvesim.fixtures import pve_sim, pve_sim_factory, pve_version
from tests.pvesim.simulator import PveSimulator


class Client:
    """Plain requests against the simulator, TLS verified against its CA.

    ``trust_env`` is off: REQUESTS_CA_BUNDLE (set on these machines) would otherwise replace the
    session's ``verify`` and the simulator's CA would not be trusted.
    """

    def __init__(self, sim: PveSimulator) -> None:
        self.sim = sim
        self.session = requests.Session()
        self.session.trust_env = False
        self.session.verify = str(sim.ca_file)
        self.session.headers.update(sim.auth_header)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        return self.session.request(method, self.sim.api_url + path, timeout=30, **kwargs)

    def get(self, path: str, **params: Any) -> requests.Response:
        return self.request("GET", path, params=params)

    def post(self, path: str, **data: Any) -> requests.Response:
        return self.request("POST", path, data=data)

    def put(self, path: str, **data: Any) -> requests.Response:
        return self.request("PUT", path, data=data)

    def delete(self, path: str, **params: Any) -> requests.Response:
        return self.request("DELETE", path, params=params)

    def data(self, method: str, path: str, **kw: Any) -> Any:
        resp = getattr(self, method)(path, **kw)
        assert resp.status_code == 200, f"{method} {path}: {resp.status_code} {resp.reason} {resp.text}"
        return resp.json()["data"]

    def wait(self, upid: str, timeout: float = 20.0) -> tuple[str, list[str]]:
        """Wait for a task; (exitstatus, log lines)."""
        deadline = time.monotonic() + timeout
        node = upid.split(":")[1]
        while True:
            status = self.data("get", f"/nodes/{node}/tasks/{upid}/status")
            if status["status"] == "stopped":
                log = self.data("get", f"/nodes/{node}/tasks/{upid}/log", limit=0)
                return status["exitstatus"], [line["t"] for line in log]
            if time.monotonic() > deadline:
                raise TimeoutError(f"task {upid} still running")
            time.sleep(0.05)

    def ok(self, upid: str) -> list[str]:
        status, log = self.wait(upid)
        assert status == "OK", f"task failed: {status}\n" + "\n".join(log)
        return log


@pytest.fixture
def pve(pve_sim: PveSimulator) -> Iterator[Client]:
    client = Client(pve_sim)
    yield client
    client.session.close()


def upload(client: Client, name: str, payload: bytes, content: str = "iso", **fields: Any) -> requests.Response:
    files = {"filename": (name, payload, "application/octet-stream")}
    data = {"content": content, **fields}
    return client.session.post(client.sim.api_url + "/nodes/pve/storage/local/upload", data=data, files=files, timeout=60)
