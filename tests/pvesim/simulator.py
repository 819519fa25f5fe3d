"""The simulator object: one PVE node on 127.0.0.1 over HTTPS, with inspection and fault injection.

    with PveSimulator(token="root@pam!imgbuild=SECRET") as sim:
        sim.url            # https://127.0.0.1:PORT
        sim.ca_file        # trust this CA, or pin sim.fingerprint (SHA-256 of the node cert)
        sim.faults.fail_task("qmstart", message="start failed: QEMU exited with code 1")
        ...
        sim.vm_ids(), sim.volume_ids()       # no orphan VM or ISO?
        sim.requests                          # what the client did (secrets redacted)
        sim.assert_no_rejections()            # the schema accepted every request

Everything lives in a temporary data directory (or *data_dir*) that ``stop`` removes when it
created it.
"""

from __future__ import annotations

import contextlib
import secrets
import shutil
import ssl
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.pvesim.api import PveApi
from tests.pvesim.backends import FakeBackend, VMBackend
from tests.pvesim.faults import FaultInjector
from tests.pvesim.schema import DEFAULT_VERSION, ApiSchema
from tests.pvesim.server import LoggedRequest, SimHTTPServer, Token
from tests.pvesim.storage import Storages
from tests.pvesim.tasks import TaskManager
from tests.pvesim.tls import make_node_cert

FULL_VERSIONS = {"8.4": "8.4.1", "9.1": "9.1.1"}
DEFAULT_TOKEN = "root@pam!imgbuild=5ec4e7c2-9a3e-4a8e-b6a4-3f0d1c2b7a91"
# Rejections that do not fail a test: a probe whose 400 answer is the information asked for
# (GET /cluster/nextid?vmid=N for a vmid in use).
HARMLESS_KINDS = {"probe"}


@dataclass
class Rejection:
    kind: str  # schema, param, probe, not-implemented, body-too-large, upload, transfer-encoding
    method: str
    path: str
    params: dict[str, Any]
    errors: dict[str, str]
    time: float = field(default_factory=time.time)

    def __str__(self) -> str:
        errs = "; ".join(f"{k}: {v.strip()}" for k, v in self.errors.items())
        return f"[{self.kind}] {self.method} {self.path}: {errs}"

    def public(self) -> dict[str, Any]:
        return {"kind": self.kind, "method": self.method, "path": self.path, "params": self.params,
                "errors": self.errors, "time": self.time}


class UnexpectedRejection(AssertionError):
    pass


class PveSimulator:
    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        version: str = DEFAULT_VERSION,
        pve_version: str | None = None,
        node: str = "pve",
        host: str = "127.0.0.1",
        port: int = 0,
        data_dir: Path | None = None,
        backend: VMBackend | None = None,
        task_duration: float = 0.05,
        auth_delay: float = 0.2,
        import_content: bool = True,
        bridges: tuple[str, ...] = ("vmbr0",),
    ) -> None:
        self.token = Token.parse(token)
        self.node = node
        self.host = host
        self._port = port
        self._own_dir = data_dir is None
        self.data_dir = Path(data_dir) if data_dir else Path(tempfile.mkdtemp(prefix="pvesim-"))
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tmp_dir = self.data_dir / "tmp"
        self.tmp_dir.mkdir(exist_ok=True)
        self.auth_delay = auth_delay
        self.backend: VMBackend = backend or FakeBackend()
        self.lock = threading.RLock()
        self.version = version  # the API schema enforced: "9.1" or "8.4"
        self.schema = ApiSchema.load(version)
        # what /version reports (an older release can be claimed to test refusals; the schema stays)
        self.pve_version = pve_version or FULL_VERSIONS[version]
        self.faults = FaultInjector()
        self.storages = Storages(self.data_dir / "storage", import_content=import_content)
        self.tasks = TaskManager(node, task_duration, self.lock)
        self.api = PveApi(node=node, pve_version=self.pve_version, schema=self.schema, storages=self.storages, tasks=self.tasks,
                          backend=self.backend, faults=self.faults, lock=self.lock, bridges=bridges)
        self._log_lock = threading.Lock()
        self.requests: list[LoggedRequest] = []
        self.rejections: list[Rejection] = []
        self.uploads: list[dict[str, Any]] = []
        self._server: SimHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.cert = make_node_cert(self.data_dir / "tls", node)

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> PveSimulator:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert.cert_file, self.cert.key_file)
        self._server = SimHTTPServer((self.host, self._port), self, context)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.1},
                                        name="pvesim-https", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.close_all()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
            self._thread = None
        self.tasks.stop_all()
        self.backend.close()
        if self._own_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)

    def __enter__(self) -> PveSimulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "simulator not started"
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        return f"https://{self.host}:{self.port}"

    @property
    def api_url(self) -> str:
        return f"{self.url}/api2/json"

    @property
    def ca_file(self) -> Path:
        return self.cert.ca_file

    @property
    def fingerprint(self) -> str:
        return self.cert.fingerprint

    @property
    def auth_header(self) -> dict[str, str]:
        return {"Authorization": f"PVEAPIToken={self.token.full_id}={self.token.secret}"}

    def info(self) -> dict[str, Any]:
        """What a client needs (the subprocess prints this as its one JSON line; no secret in it)."""
        return {"url": self.url, "api_url": self.api_url, "host": self.host, "port": self.port,
                "node": self.node, "version": self.pve_version, "fingerprint": self.fingerprint, "ca_file": str(self.ca_file),
                "token_id": self.token.full_id, "data_dir": str(self.data_dir),
                "storages": {"iso": "local", "import": "local", "disk": "local-lvm"}}

    # --- recording (called by the server) -------------------------------------------------------
    def record_request(self, entry: LoggedRequest) -> None:
        with self._log_lock:
            self.requests.append(entry)

    def record_rejection(self, kind: str, method: str, path: str, params: dict[str, Any], errors: dict[str, str]) -> None:
        from tests.pvesim.server import redact

        with self._log_lock:
            self.rejections.append(Rejection(kind, method, path, redact(dict(params)), dict(errors)))

    def record_upload(self, params: dict[str, Any], size: int) -> None:
        with self._log_lock:
            self.uploads.append({"storage_path": params.get("storage"), "content": params.get("content"),
                                 "filename": params.get("filename"), "bytes": size, "time": time.time()})

    def new_upload_tmpfile(self) -> Path:
        return self.tmp_dir / f"pveupload-{secrets.token_hex(16)}"

    # --- rejections ----------------------------------------------------------------------------
    def unexpected_rejections(self) -> list[Rejection]:
        with self._log_lock:
            return [r for r in self.rejections if r.kind not in HARMLESS_KINDS]

    def take_rejections(self) -> list[Rejection]:
        """Return and forget every recorded rejection (a test that expected them consumes them)."""
        with self._log_lock:
            out, self.rejections = self.rejections, []
        return out

    @contextlib.contextmanager
    def expecting_rejection(self, kind: str | None = None) -> Iterator[list[Rejection]]:
        """Assert that the block caused at least one rejection (of *kind*); they are consumed."""
        with self._log_lock:
            before = len(self.rejections)
        got: list[Rejection] = []
        yield got
        with self._log_lock:
            new = self.rejections[before:]
            del self.rejections[before:]
        got.extend(new)
        if not [r for r in new if kind is None or r.kind == kind]:
            raise AssertionError(f"expected a {kind or 'any'} rejection, got: {[str(r) for r in new] or 'none'}")

    def assert_no_rejections(self) -> None:
        bad = self.unexpected_rejections()
        if bad:
            lines = "\n  ".join(str(r) for r in bad)
            raise UnexpectedRejection(f"the PVE simulator rejected {len(bad)} request(s):\n  {lines}")

    # --- inspection ----------------------------------------------------------------------------
    def vm_ids(self) -> list[int]:
        with self.lock:
            return sorted(self.api.vms)

    def vms(self) -> list[dict[str, Any]]:
        with self.lock:
            return [{"vmid": vm.vmid, "config": dict(vm.config), "lock": vm.lock,
                     "running": self.backend.is_running(vm.vmid)} for vm in sorted(self.api.vms.values(), key=lambda v: v.vmid)]

    def vm_config(self, vmid: int) -> dict[str, str]:
        with self.lock:
            return dict(self.api.vms[vmid].config)

    def volume_ids(self, content: str | None = None) -> list[str]:
        with self.lock:
            return sorted(v.volid for v in self.storages.volumes.values() if content is None or v.content == content)

    def volume_path(self, volid: str) -> Path:
        with self.lock:
            return self.storages.volumes[volid].path

    def requests_matching(self, method: str | None = None, path_regex: str = ".*") -> list[LoggedRequest]:
        import re

        with self._log_lock:
            return [r for r in self.requests if (method is None or r.method == method) and re.search(path_regex, r.path)]

    def running_tasks(self) -> list[str]:
        with self.lock:
            return [t.upid for t in self.tasks.running()]

    def wait_tasks(self, timeout: float = 10.0) -> None:
        """Wait until no task is running (except hung ones planted by faults)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            pending = [t for t in self.tasks.running() if not t.stop_requested.is_set()]
            if not pending or all(t.done.wait(0.05) for t in pending):
                return
        raise TimeoutError(f"tasks still running: {self.running_tasks()}")

    # --- reaching guests --------------------------------------------------------------------------
    def forward(self, vmid: int, guest_port: int) -> tuple[str, int]:
        """(host, port) on this machine that reaches *guest_port* of VM *vmid* (QemuBackend)."""
        ports = self.backend.forwards(vmid)
        if guest_port not in ports:
            raise KeyError(f"VM {vmid} has no forward for guest port {guest_port} (have: {sorted(ports)})")
        return "127.0.0.1", ports[guest_port]

    # --- the control endpoint (subprocess mode) --------------------------------------------------
    def state(self) -> dict[str, Any]:
        with self._log_lock:
            requests = [r.public() for r in self.requests]
            rejections = [r.public() for r in self.rejections]
            uploads = list(self.uploads)
        with self.lock:
            volumes = [{"volid": v.volid, "content": v.content, "size": v.size, "vmid": v.vmid}
                       for v in sorted(self.storages.volumes.values(), key=lambda v: v.volid)]
            tasks = [t.status_dict() for t in self.tasks.tasks.values()]
        return {"vms": self.vms(), "volumes": volumes, "requests": requests, "rejections": rejections,
                "uploads": uploads, "tasks": tasks, "faults": [r.public() for r in self.faults.rules]}

    def control(self, method: str, path: str, query: dict[str, str], body: dict[str, Any]) -> Any:
        if method == "GET" and path == "/state":
            return self.state()
        if method == "GET" and path == "/faults":
            return [r.public() for r in self.faults.rules]
        if method == "POST" and path == "/faults":
            return self.faults.add(body).public()
        if method == "DELETE" and path == "/faults":
            self.faults.clear()
            return None
        if method == "POST" and path == "/rejections/take":
            return [r.public() for r in self.take_rejections()]
        if method == "GET" and path == "/forward":
            host, port = self.forward(int(query["vmid"]), int(query["port"]))
            return {"host": host, "port": port}
        if isinstance(self.backend, FakeBackend):
            if method == "POST" and path == "/agent":
                vmid = body.get("vmid")
                self.backend.set_agent(None if vmid is None else int(vmid), interfaces=body.get("interfaces"),
                                       hostname=body.get("hostname"), delay=float(body.get("delay", 0)),
                                       installed=bool(body.get("installed", True)))
                return None
            if method == "POST" and path == "/poweroff":
                self.backend.power_off_after(int(body["vmid"]), float(body.get("after", 0)))
                return None
        raise KeyError(f"no control endpoint {method} {path}")
