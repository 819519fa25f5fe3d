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

from tests.pvesim.access import Access
from tests.pvesim.api import PveApi
from tests.pvesim.backends import FakeBackend, VMBackend
from tests.pvesim.cluster import NodeSpec, loopback_address, single_node
from tests.pvesim.faults import FaultInjector
from tests.pvesim.schema import DEFAULT_VERSION, ApiSchema
from tests.pvesim.sdn import Sdn
from tests.pvesim.server import LoggedRequest, SimHTTPServer, Token
from tests.pvesim.storage import StorageDef, Storages, default_storages
from tests.pvesim.tasks import TaskManager
from tests.pvesim.tls import make_cluster_certs

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
        nodes: list[NodeSpec] | None = None,
        storages: list[StorageDef] | None = None,
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
        self.node_specs = nodes or single_node(node, bridges)
        self.node = self.node_specs[0].name  # the node clients talk to (its URL is self.url)
        self.cluster = len(self.node_specs) > 1
        if self.cluster and host != "127.0.0.1":
            raise ValueError("a simulated cluster listens on 127.0.0.1, 127.0.0.2, ...")
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
        self.storages = Storages(self.data_dir / "storage", [n.name for n in self.node_specs],
                                 storages or default_storages(cluster=self.cluster, import_content=import_content))
        self.tasks = TaskManager(self.node, task_duration, self.lock)
        # users and tokens: the default token is root's, without privilege separation (all privileges)
        self.access = Access(version)
        self.access.add_token(self.token.full_id, self.token.secret, privsep=False)
        self.sdn = Sdn(self.access)
        self.addresses = {n.name: (host if i == 0 else loopback_address(i)) for i, n in enumerate(self.node_specs)}
        self.certs = make_cluster_certs(self.data_dir / "tls", list(self.addresses.items()))
        self.api = PveApi(nodes=self.node_specs, pve_version=self.pve_version, schema=self.schema,
                          storages=self.storages, tasks=self.tasks, backend=self.backend, faults=self.faults,
                          lock=self.lock, access=self.access, sdn=self.sdn, certs=self.certs)
        self._log_lock = threading.Lock()
        self.requests: list[LoggedRequest] = []
        self.rejections: list[Rejection] = []
        self.uploads: list[dict[str, Any]] = []
        self._servers: dict[str, SimHTTPServer] = {}
        self._threads: list[threading.Thread] = []
        self.cert = self.certs[self.node]
        self.api.cluster_ca_pem = self.cert.ca_file.read_text()

    # --- lifecycle -----------------------------------------------------------------------------
    def start(self) -> PveSimulator:
        """Listen: every online node on its own address, all on one port (a PVE cluster's 8006)."""
        for attempt in range(10):
            port = self._port
            try:
                for spec in self.node_specs:
                    if not spec.online:
                        continue
                    cert = self.certs[spec.name]
                    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                    context.minimum_version = ssl.TLSVersion.TLSv1_2
                    context.load_cert_chain(cert.cert_file, cert.key_file)
                    server = SimHTTPServer((self.addresses[spec.name], port), self, context, spec.name)
                    self._servers[spec.name] = server
                    port = int(server.server_address[1])
                break
            except OSError:
                self._close_servers()
                if self._port or attempt == 9:
                    raise
        for name, server in self._servers.items():
            thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.1},
                                      name=f"pvesim-https-{name}", daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def _close_servers(self) -> None:
        for server in self._servers.values():
            server.server_close()
        self._servers = {}

    def stop(self) -> None:
        for server in self._servers.values():
            server.shutdown()
            server.close_all()
            server.server_close()
        self._servers = {}
        for thread in self._threads:
            thread.join(5)
        self._threads = []
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
        assert self._servers, "simulator not started"
        return int(self._servers[self.node].server_address[1])

    @property
    def url(self) -> str:
        return self.node_url(self.node)

    def node_url(self, node: str) -> str:
        host = self.addresses[node]
        return f"https://[{host}]:{self.port}" if ":" in host else f"https://{host}:{self.port}"

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

    # --- the cluster, users and ACLs (what an administrator changes) -------------------------------
    def set_node(self, node: str, **changes: Any) -> None:
        """Change a node's figures (mem, maxmem, cpu, maxcpu), its version or whether it is online."""
        with self.lock:
            spec = self.api.nodes[node]
            for key, value in changes.items():
                if not hasattr(spec, key):
                    raise AttributeError(f"NodeSpec has no {key}")
                setattr(spec, key, value)

    def add_token(self, full_id: str, secret: str, *, privsep: bool = True) -> Token:
        """A further API token (``pveum user token add``): its requests are checked against the ACLs."""
        with self.lock:
            self.access.add_token(full_id, secret, privsep=privsep)
        return Token.parse(f"{full_id}={secret}")

    def add_role(self, name: str, privs: list[str] | set[str]) -> None:
        with self.lock:
            self.access.add_role(name, privs)

    def grant(self, path: str, ugid: str, role: str, *, propagate: bool = True) -> None:
        with self.lock:
            self.access.grant(path, ugid, role, propagate=propagate)

    def info(self) -> dict[str, Any]:
        """What a client needs (the subprocess prints this as its one JSON line; no secret in it)."""
        return {"url": self.url, "api_url": self.api_url, "host": self.host, "port": self.port,
                "node": self.node, "version": self.pve_version, "fingerprint": self.fingerprint,
                "ca_file": str(self.ca_file), "token_id": self.token.full_id, "data_dir": str(self.data_dir),
                "nodes": {n.name: {"online": n.online, "url": self.node_url(n.name) if n.online else None,
                                   "fingerprint": self.certs[n.name].fingerprint} for n in self.node_specs},
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
            return [{"vmid": vm.vmid, "node": vm.node, "config": dict(vm.config), "lock": vm.lock,
                     "running": self.backend.is_running(vm.vmid)} for vm in sorted(self.api.vms.values(), key=lambda v: v.vmid)]

    def vm_config(self, vmid: int) -> dict[str, str]:
        with self.lock:
            return dict(self.api.vms[vmid].config)

    def volume_ids(self, content: str | None = None, node: str | None = None) -> list[str]:
        """Volume ids on every node (a volume of a node-local storage once per node holding it), or those
        *node* sees (its own and the shared storages')."""
        with self.lock:
            vols = self.storages.visible(node) if node else list(self.storages.volumes.values())
            return sorted(v.volid for v in vols if content is None or v.content == content)

    def volume_nodes(self, volid: str) -> list[str]:
        """The nodes holding *volid* ("" for a shared storage)."""
        with self.lock:
            return sorted(scope for scope, vid in self.storages.volumes if vid == volid)

    def volume_path(self, volid: str, node: str | None = None) -> Path:
        with self.lock:
            for (scope, vid), vol in self.storages.volumes.items():
                if vid == volid and (node is None or scope in ("", node)):
                    return vol.path
            raise KeyError(volid)

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
            volumes = [{"volid": v.volid, "node": v.scope or None, "content": v.content, "size": v.size, "vmid": v.vmid}
                       for v in sorted(self.storages.volumes.values(), key=lambda v: (v.volid, v.scope))]
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
