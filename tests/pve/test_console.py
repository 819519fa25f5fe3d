"""Screenshots on Proxmox VE through its VNC console: vncproxy, vncwebsocket (a WebSocket through pveproxy)
and RFB, against the simulator, whose QEMU back end runs the VM with its VNC server as qemu-server does.

The VM has a blank disk and no OS: the firmware finds nothing to boot and says so on the text screen, which
QEMU shows in a second. What the console returns must be QEMU's own screen, pixel for pixel. Each console
behaviour is checked with PVE 8.4's semantics (a password only when asked for, a ticket bound to user and VM)
and with the later ones of our 9.1 schema (a password always, the ticket prefixed with it and bound to the port).
"""

from __future__ import annotations

import contextlib
import socket
import ssl
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from urllib.parse import urlencode

import pytest

from builder.errors import ImgbuildError
from builder.targets.base import VM, DiskSpec, VMSpec
from builder.targets.local.qmp import QMPClient
from builder.targets.pve import screen
from builder.targets.pve.client import PveClient, PveError
from builder.targets.pve.config import PveConfig
from builder.targets.pve.target import PveTarget
from builder.verify.pngcheck import decode_png, inspect_png
from tests.pvesim.qemu_backend import QemuBackend
from tests.pvesim.simulator import PveSimulator

VERSIONS = ("8.4", "9.1")


class Node:
    def __init__(self, sim: PveSimulator, target: PveTarget, vm: VM) -> None:
        self.sim, self.target, self.vm = sim, target, vm
        self.qemu_path = f"/nodes/{sim.node}/qemu/{vm.ident}"

    def qmp(self) -> QMPClient:
        backend = self.sim.backend
        assert isinstance(backend, QemuBackend)
        return QMPClient(backend.workdir / self.vm.ident / "qmp.sock").connect(wait=5)

    def screendump(self, dest: Path) -> bytes:
        with self.qmp() as qmp:
            qmp.execute("screendump", {"filename": str(dest), "format": "png"}, timeout=30)
        return dest.read_bytes()

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """The guest's CPUs stopped: its screen cannot change between two reads (QEMU still serves it)."""
        with self.qmp() as qmp:
            qmp.execute("stop")
        try:
            yield
        finally:
            with self.qmp() as qmp:
                qmp.execute("cont")


def config_for(sim: PveSimulator, **kw: object) -> PveConfig:
    base = PveConfig(name="sim", url=sim.url, token_id=sim.token.full_id, token_secret=sim.token.secret,
                     node=sim.node, fingerprint=sim.fingerprint, task_timeout=60)
    return replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="module", params=VERSIONS)
def node(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    sim = PveSimulator(backend=QemuBackend(accel="tcg"), version=request.param).start()
    target = PveTarget(PveClient(config_for(sim)))
    try:
        vm = target.create_vm(VMSpec(name="console", cores=1, memory_mib=128, disks=(DiskSpec(1 << 30),),
                                     agent=False, display="std"))
        target.start(vm)
        node = Node(sim, target, vm)
        deadline = time.monotonic() + 60
        tmp = tmp_path_factory.mktemp("console")
        while (info := inspect_png(node.screendump(tmp / "wait.png"))).colours < 2 or info.width != 720:
            assert time.monotonic() < deadline, "the firmware's text screen never came up"
            time.sleep(0.2)
        yield node
    finally:
        rejected = sim.unexpected_rejections()
        sim.stop()
        if rejected:
            pytest.fail("the PVE simulator rejected: " + "; ".join(map(str, rejected)), pytrace=False)


def test_the_console_shows_qemus_own_screen(node: Node, tmp_path: Path) -> None:
    with node.paused():  # the firmware rewrites its screen now and then; paused, both reads see one screen
        shot = node.target.screenshot(node.vm, tmp_path / "shot.png")
        qemus = decode_png(node.screendump(tmp_path / "dump.png"))
    ours = decode_png(shot.read_bytes())
    assert (ours.width, ours.height, ours.pixels) == (qemus.width, qemus.height, qemus.pixels), \
        "the console's picture differs from QEMU's screendump of the same (paused) screen"
    assert (ours.width, ours.height) == (720, 400) and inspect_png(shot.read_bytes()).colours > 1
    calls = [(r.method, r.path, r.status) for r in node.sim.requests[-8:]]
    assert ("POST", f"{node.qemu_path}/vncproxy", 200) in calls
    assert ("GET", f"{node.qemu_path}/vncwebsocket", 101) in calls
    proxy = node.sim.requests_matching("POST", "/vncproxy$")[-1]
    assert proxy.params["websocket"] == "1" and "generate-password" in proxy.params  # (its value is redacted)
    ws = node.sim.requests_matching("GET", "/vncwebsocket$")[-1]
    assert ws.params["vncticket"] == "***" and ws.user == node.sim.token.full_id  # the token, redacted logs


def test_the_proxy_task_ends_when_the_console_closes(node: Node, tmp_path: Path) -> None:
    node.target.screenshot(node.vm, tmp_path / "shot.png")
    upid = [t for t in node.sim.tasks.tasks.values() if t.type == "vncproxy"][-1].upid
    assert node.target.client.wait_task(upid, timeout=10, what="vncproxy").exitstatus == "OK"


def test_a_ticket_is_good_for_its_vm_and_user_only(node: Node) -> None:
    client = node.target.client
    answer = client.post(f"{node.qemu_path}/vncproxy", websocket=True, **{"generate-password": True})
    forged = answer["ticket"][:-6] + "AAAAA="
    with pytest.raises(PveError, match="refused the console ticket .*invalid PVEVNC ticket"):
        screen.open_websocket(client, f"{node.qemu_path}/vncwebsocket", timeout=10, port=answer["port"],
                               vncticket=forged)
    other = f"/nodes/{node.sim.node}/qemu/{int(node.vm.ident) + 1}/vncwebsocket"
    with pytest.raises(PveError, match="invalid PVEVNC ticket"):
        screen.open_websocket(client, other, timeout=10, port=answer["port"], vncticket=answer["ticket"])
    ws = screen.open_websocket(client, f"{node.qemu_path}/vncwebsocket", timeout=10, port=answer["port"],
                                vncticket=answer["ticket"])
    ws.close()


def test_the_ticket_and_password_follow_the_version(node: Node) -> None:
    client = node.target.client
    asked = client.post(f"{node.qemu_path}/vncproxy", websocket=True, **{"generate-password": True})
    plain = client.post(f"{node.qemu_path}/vncproxy", websocket=True)
    password = asked["password"]
    assert len(password) == 8 and all("!" <= c <= "`" for c in password)
    if node.sim.version == "8.4":
        assert asked["ticket"].startswith("PVEVNC:") and "password" not in plain
    else:  # a password always, and the ticket carries it in front
        assert asked["ticket"] == f"{password}:{asked['ticket'][9:]}" and "password" in plain
    for answer in (asked, plain):
        assert {"user", "ticket", "port", "upid", "cert"} <= set(answer) and "BEGIN CERTIFICATE" in answer["cert"]
    if node.sim.version == "9.1":
        # the ticket names its port: it opens no other proxy's
        with pytest.raises(PveError, match="invalid PVEVNC ticket"):
            screen.open_websocket(client, f"{node.qemu_path}/vncwebsocket", timeout=10, port=plain["port"],
                                   vncticket=asked["ticket"])
    else:  # nobody connects: the worker gives up after 10 s (same code for both versions)
        with pytest.raises(PveError, match="connection timed out"):
            client.wait_task(plain["upid"], timeout=20, what="an unused VNC proxy")


def test_a_token_needs_vm_console_on_the_vm(node: Node, tmp_path: Path) -> None:
    """A privilege-separated token (not root's): without VM.Console, PVE's 403 for vncproxy; with it on this
    VM only, the screenshot works: vncwebsocket checks the ticket against the same token."""
    vm_path = f"/vms/{node.vm.ident}"
    node.sim.add_role("ImgbuildWatch", ["VM.Audit", "VM.PowerMgmt"])
    node.sim.add_role("ImgbuildConsole", ["VM.Audit", "VM.Console"])
    for token, role in (("imgbuild@pve!watch", "ImgbuildWatch"), ("imgbuild@pve!console", "ImgbuildConsole")):
        node.sim.add_token(token, f"{role}-secret")
        node.sim.grant(vm_path, token, role)
        node.sim.grant(vm_path, "imgbuild@pve", role)  # privilege separation: the user's and the token's
    watcher = PveTarget(PveClient(config_for(node.sim, token_id="imgbuild@pve!watch",
                                             token_secret="ImgbuildWatch-secret")))
    with node.sim.expecting_rejection("permission"), \
            pytest.raises(PveError, match=f"denied POST {node.qemu_path}/vncproxy") as err:
        watcher.screenshot(node.vm, tmp_path / "shot.png")
    assert err.value.status == 403 and "VM.Console" in err.value.message
    viewer = PveTarget(PveClient(config_for(node.sim, token_id="imgbuild@pve!console",
                                            token_secret="ImgbuildConsole-secret")))
    assert inspect_png(viewer.screenshot(node.vm, tmp_path / "shot.png").read_bytes()).colours > 1
    assert node.sim.requests_matching("GET", "/vncwebsocket$")[-1].user == "imgbuild@pve!console"


def test_a_wrong_pin_refuses_the_console_before_the_token_is_sent(node: Node) -> None:
    client = PveClient(config_for(node.sim, fingerprint="AA:" * 31 + "AA"))
    before = len(node.sim.requests)
    with pytest.raises(PveError, match="does not match the pinned fingerprint"):
        client.tls_socket(f"{node.qemu_path}/vncwebsocket", timeout=10)
    ca = PveClient(config_for(node.sim, fingerprint=None, ca_file=node.sim.ca_file))
    ca.tls_socket(f"{node.qemu_path}/vncwebsocket", timeout=10).close()
    with pytest.raises(PveError, match="TLS: cannot verify the certificate"):
        PveClient(config_for(node.sim, fingerprint=None)).tls_socket("/x", timeout=10)
    assert len(node.sim.requests) == before


# --- the simulator's pveproxy, as a client that is not websocket-client sees it -------------------------------
def _raw_get(node: Node, query: str, headers: dict[str, str]) -> tuple[ssl.SSLSocket, bytes]:
    """A GET of vncwebsocket over TLS (certificate pinned by the CA), returning the socket and the answer head."""
    context = ssl.create_default_context(cafile=str(node.sim.ca_file))
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", node.sim.port), timeout=10),
                               server_hostname="127.0.0.1")
    lines = [f"GET /api2/json{node.qemu_path}/vncwebsocket?{query} HTTP/1.1", f"Host: 127.0.0.1:{node.sim.port}",
             f"Authorization: PVEAPIToken={node.sim.token.full_id}={node.sim.token.secret}",
             *(f"{k}: {v}" for k, v in headers.items())]
    sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(4096)
        if not chunk:
            break
        head += chunk
    return sock, head


def _ticket_query(node: Node) -> str:
    answer = node.target.client.post(f"{node.qemu_path}/vncproxy", websocket=True, **{"generate-password": True})
    return urlencode({"port": answer["port"], "vncticket": answer["ticket"]})


UPGRADE = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
           "Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ=="}


def test_pveproxy_answers_the_upgrade_as_rfc_6455_says(node: Node) -> None:
    sock, head = _raw_get(node, _ticket_query(node), {**UPGRADE, "Sec-WebSocket-Protocol": "binary"})
    with sock:
        assert head.startswith(b"HTTP/1.1 101 Switching Protocols\r\n")
        assert b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n" in head  # RFC 6455's own example
        assert b"Sec-WebSocket-Protocol: binary\r\n" in head  # echoed, as pveproxy does
        sock.sendall(b"\x88\x82\x01\x02\x03\x04\x02\xea")  # close (1000), masked with 01 02 03 04
        while chunk := sock.recv(4096):  # RFB's greeting may come first; then pveproxy hangs up
            assert chunk.startswith(b"\x82") or not chunk.startswith(b"\x88")


@pytest.mark.parametrize(("headers", "answer"), [
    ({}, b"HTTP/1.1 200 OK"),  # no Upgrade: the API's JSON answer
    ({**UPGRADE, "Upgrade": "h2c"}, b"HTTP/1.1 500 unable to upgrade to protocol 'h2c'"),
    ({**UPGRADE, "Sec-WebSocket-Version": "8"}, b"HTTP/1.1 500 unsupported websocket-version '8'"),
    ({k: v for k, v in UPGRADE.items() if k != "Sec-WebSocket-Key"}, b"HTTP/1.1 500 missing websocket-key"),
])
def test_pveproxy_upgrades_only_a_proper_request(node: Node, headers: dict[str, str], answer: bytes) -> None:
    sock, head = _raw_get(node, _ticket_query(node), headers)
    sock.close()
    assert head.startswith(answer), head[:200]


@pytest.mark.parametrize(("frame", "message"), [
    (b"\x82\x02\x01\x02", "received unmasked websocket frame from client"),
    (b"\x02\x82\x00\x00\x00\x00\x01\x02", "received fragmented websocket frame"),
    (b"\xc2\x82\x00\x00\x00\x00\x01\x02", "received websocket frame with RSV flags"),
    (b"\x82\xff" + (200000).to_bytes(8, "big") + b"\x00" * 4, "received too large websocket frame (len = 200000)"),
    (b"\x83\x80\x00\x00\x00\x00", "received unhandled websocket opcode 3"),
])
def test_pveproxy_drops_frames_pve_refuses(node: Node, frame: bytes, message: str) -> None:
    sock, head = _raw_get(node, _ticket_query(node), UPGRADE)
    with sock:
        assert head.startswith(b"HTTP/1.1 101")
        sock.sendall(frame)
        deadline = time.monotonic() + 10
        while not [r for r in node.sim.rejections if r.kind == "websocket"]:
            assert time.monotonic() < deadline, "pveproxy took the frame"
            time.sleep(0.05)
    (rejection,) = node.sim.take_rejections()
    assert rejection.errors == {"_": message}


def test_a_stopped_vm_has_no_screen(node: Node, tmp_path: Path) -> None:
    """Last in the module: it stops the VM. The console's own failure names the proxy task's reason."""
    node.target.stop(node.vm)
    with pytest.raises(ImgbuildError, match="is not running: no screen to capture"):
        node.target.screenshot(node.vm, tmp_path / "shot.png")
    with pytest.raises(ImgbuildError, match="no picture from the console") as err:
        screen.screenshot(node.target.client, node.qemu_path, tmp_path / "shot.png", timeout=20)
    assert "Failed to run vncproxy." in (err.value.detail or "") and "VM 100 not running" in (err.value.detail or "")
    assert not (tmp_path / "shot.png").exists()
