"""A VM's screen on Proxmox VE, read through the console API that PVE's web UI (noVNC) uses.

PVE has no screenshot call. Its console is VNC over a WebSocket (qemu-server ``src/PVE/API2/Qemu.pm``):

1. ``POST /nodes/{node}/qemu/{vmid}/vncproxy`` with ``websocket=1`` and ``generate-password=1`` starts a
   ``vncproxy`` worker that waits (10 s) for one connection on a port in 5900-5999 and relays it to QEMU's
   VNC server, whose password it sets for 30 s. The answer: ``port``, ``ticket``, ``password``, ``upid``.
   (PVE 8.4 returns a password only when asked with ``generate-password``; later versions always make one.)
2. ``GET .../vncwebsocket?port=...&vncticket=...`` with the API token upgrades to a WebSocket (pveproxy,
   pve-http-server ``websocket_proxy``). The ticket is checked against the same user that asked for it, so
   an API token works (``VM.Console`` on ``/vms/{vmid}``).
3. RFB over that WebSocket (builder/rfb.py), VNC Authentication with the generated password: one full
   framebuffer, saved as PNG.

The WebSocket framing is websocket-client's; the TLS connection under it is made and checked exactly as
the API calls' (``PveClient.tls_socket``), and the token goes in the same Authorization header.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import urlencode

import websocket

from builder.errors import ImgbuildError
from builder.fsutil import write_atomic
from builder.rfb import RfbError, capture
from builder.targets.pve.client import PveClient, PveError, PveTaskError

log = logging.getLogger(__name__)

SCREENSHOT_TIMEOUT = 60.0


class _WebSocketStream:
    """builder.rfb's Stream over a websocket-client connection (RFB bytes in binary frames)."""

    def __init__(self, ws: websocket.WebSocket) -> None:
        self.ws = ws

    def recv(self, timeout: float) -> bytes:
        self.ws.settimeout(max(timeout, 0.001))
        try:
            opcode, data = self.ws.recv_data()
        except websocket.WebSocketTimeoutException:
            raise TimeoutError from None
        except (websocket.WebSocketConnectionClosedException, ConnectionError):
            return b""
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            return b""
        return bytes(data)

    def send(self, data: bytes) -> None:
        try:
            self.ws.send_bytes(data)
        except websocket.WebSocketConnectionClosedException as exc:
            raise ConnectionError(str(exc) or "connection closed") from None


def open_websocket(client: PveClient, path: str, *, timeout: float, **params: str | int) -> websocket.WebSocket:
    """The WebSocket of ``GET path?params`` on the node, with the API token and the client's TLS checks."""
    sock = client.tls_socket(path, timeout=timeout)
    url = client.url(path).replace("https://", "wss://", 1) + "?" + urlencode(params)
    ws = websocket.WebSocket(skip_utf8_validation=True)
    try:
        ws.connect(url, socket=sock, timeout=timeout, suppress_origin=True,
                   header=[f"Authorization: {client.authorization()}"])
    except websocket.WebSocketBadStatusException as exc:
        sock.close()
        reason = exc.status_message or ""
        if exc.status_code == 401 and "ticket" in reason:
            raise PveError(f"Proxmox VE refused the console ticket for {path}: {reason}", status=401,
                           reason=reason, detail="a console ticket is valid for 40 seconds, for the user (token) "
                                                 "that asked for it and its VM") from None
        raise client.http_error("GET", path, exc.status_code, reason, {}) from None
    except (websocket.WebSocketException, OSError) as exc:
        sock.close()
        raise PveError(f"no WebSocket from Proxmox VE for {path}: {exc}", transient=True) from None
    return ws


def screenshot(client: PveClient, qemu_path: str, dest: Path, *, timeout: float = SCREENSHOT_TIMEOUT) -> Path:
    """The screen of the VM at *qemu_path* (``/nodes/NODE/qemu/VMID``) as a PNG at *dest*."""
    proxy = client.post(f"{qemu_path}/vncproxy", websocket=True, **{"generate-password": True}) or {}
    password, ticket, port, upid = (proxy.get(k) for k in ("password", "ticket", "port", "upid"))
    if not password or not ticket or not port:
        raise PveError(f"Proxmox VE's answer to {qemu_path}/vncproxy lacks "
                       f"{', '.join(k for k in ('password', 'ticket', 'port') if not proxy.get(k))}",
                       detail="it needs a node that supports generate-password (Proxmox VE 8.4 or later)")
    ws = open_websocket(client, f"{qemu_path}/vncwebsocket", timeout=timeout, port=int(port), vncticket=str(ticket))
    failure: RfbError | None = None
    try:
        framebuffer = capture(_WebSocketStream(ws), str(password), timeout=timeout)
    except RfbError as exc:
        failure = exc
    finally:  # also on Ctrl-C/SIGTERM: closing ends the proxy task on the node
        ws.close(timeout=2)
    if failure is not None:
        raise ImgbuildError(f"no picture from the console of {qemu_path}: {failure.message}",
                            detail=_proxy_outcome(client, upid, qemu_path))
    write_atomic(Path(dest), framebuffer.png())
    return Path(dest)


def _proxy_outcome(client: PveClient, upid: object, qemu_path: str) -> str:
    """Why the vncproxy worker ended, once it has (it does when the connection closes)."""
    if not isinstance(upid, str):
        return ""
    try:
        client.wait_task(upid, timeout=15, what=f"the VNC proxy of {qemu_path}")
    except PveTaskError as exc:
        return f"{exc.message}\n{exc.detail}".rstrip()
    except PveError as exc:
        return f"(the VNC proxy task's outcome is unknown: {exc.message})"
    return f"the VNC proxy task {upid} ended without an error"
