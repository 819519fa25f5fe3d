"""pveproxy's WebSocket relay (pve-http-server ``src/PVE/APIServer/AnyEvent.pm``, ``handle_api2_request`` and
``websocket_proxy``), for ``GET .../vncwebsocket``:

- a GET whose path ends in ``websocket`` and that carries an ``Upgrade`` header is upgraded once the API call
  (here: ticket check, VM exists) answered 200 with a ``port``; otherwise the API's answer goes out as usual;
- ``Upgrade`` must be ``websocket``, ``Sec-WebSocket-Version`` 13 and ``Sec-WebSocket-Key`` present, else 500
  ("unable to upgrade to protocol ...", "unsupported websocket-version ...", "missing websocket-key");
- the answer is ``101 Switching Protocols`` with ``Sec-WebSocket-Accept`` and, echoed, the request's
  ``Sec-WebSocket-Protocol``;
- then it relays: client frames must be final (no fragments), without RSV bits, masked, at most 128 KiB; text
  and binary payloads go to localhost:port; close shuts both sides down; ping is answered with pong; any other
  opcode ends the connection. Bytes from the port come back as binary frames of at most 128 KiB, unmasked.

A frame PVE would refuse is recorded as a ``websocket`` rejection, so the client that sent it fails its test.
"""

from __future__ import annotations

import base64
import hashlib
import select
import socket
import struct
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.pvesim.server import Handler

MAX_PAYLOAD = 128 * 1024
GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class _Refused(Exception):
    """A frame pveproxy dies on; the connection ends."""


def wants_upgrade(handler: Handler, method: str, rel: str) -> bool:
    return method == "GET" and rel.endswith("websocket") and handler.headers.get("Upgrade") is not None


def upgrade(handler: Handler, rel: str, data: Any) -> None:
    """Switch the connection of a successful ``vncwebsocket`` call to a WebSocket relayed to ``data["port"]``."""
    upgrade_to = (handler.headers.get("Upgrade") or "").lower()
    version = handler.headers.get("Sec-WebSocket-Version")
    key = handler.headers.get("Sec-WebSocket-Key")
    if upgrade_to != "websocket":
        return handler._send(500, f"unable to upgrade to protocol '{upgrade_to}'", close=True)
    if not version or version != "13":
        return handler._send(500, f"unsupported websocket-version '{version or ''}'", close=True)
    if not key:
        return handler._send(500, "missing websocket-key", close=True)
    accept = base64.b64encode(hashlib.sha1(f"{key}{GUID}".encode()).digest()).decode()
    protocol = handler.headers.get("Sec-WebSocket-Protocol") or ""
    handler.close_connection = True
    try:
        backend = socket.create_connection(("127.0.0.1", int(data["port"])), timeout=5)
    except OSError:
        return  # pveproxy dies in tcp_connect's callback: the client sees the connection close
    backend.settimeout(None)
    with backend:
        head = ("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n"
                f"Sec-WebSocket-Accept: {accept}\r\n"
                + (f"Sec-WebSocket-Protocol: {protocol}\r\n" if protocol else "") + "\r\n")
        handler.wfile.write(head.encode("latin-1"))
        handler._status, handler._reason = 101, "Switching Protocols"
        try:
            _relay(handler, backend)
        except _Refused as exc:
            handler.sim.record_rejection("websocket", "GET", rel, {}, {"_": str(exc)})
        except OSError:
            pass


def _relay(handler: Handler, backend: socket.socket) -> None:
    client = handler.request
    pending = bytearray()
    while True:
        ready = [client] if client.pending() else select.select([client, backend], [], [], 0.5)[0]
        if client in ready:
            chunk = handler.rfile.read1(1 << 17)
            if not chunk:
                return
            pending += chunk
            if _frames(pending, handler, backend):
                return
        if backend in ready:
            data = backend.recv(MAX_PAYLOAD)
            if not data:
                return  # proxyhdl on_eof: pveproxy drops the client connection, no close frame
            handler.wfile.write(_frame(data, 0x82))


def _frame(payload: bytes, first: int) -> bytes:
    n = len(payload)
    if n <= 125:
        head = struct.pack(">BB", first, n)
    elif n <= 0xFFFF:
        head = struct.pack(">BBH", first, 126, n)
    else:
        head = struct.pack(">BBQ", first, 127, n)
    return head + payload


def _frames(buf: bytearray, handler: Handler, backend: socket.socket) -> bool:
    """Handle every complete frame in *buf* (consumed); True when the client closed the WebSocket."""
    while len(buf) >= 2:
        first, second = buf[0], buf[1]
        if not first & 0x80:
            raise _Refused("received fragmented websocket frame")
        if first & 0x70:
            raise _Refused("received websocket frame with RSV flags")
        if not second & 0x80:
            raise _Refused("received unmasked websocket frame from client")
        opcode, length, offset = first & 0x0F, second & 0x7F, 2
        if length == 126:
            if len(buf) < 4:
                return False
            (length,) = struct.unpack(">H", buf[2:4])
            offset = 4
        elif length == 127:
            if len(buf) < 10:
                return False
            (length,) = struct.unpack(">Q", buf[2:10])
            offset = 10
        if length > MAX_PAYLOAD:
            raise _Refused(f"received too large websocket frame (len = {length})")
        if len(buf) < offset + 4 + length:
            return False
        mask = bytes(buf[offset : offset + 4])
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(buf[offset + 4 : offset + 4 + length]))
        del buf[: offset + 4 + length]
        if opcode in (1, 2):
            backend.sendall(payload)
        elif opcode == 8:
            backend.shutdown(socket.SHUT_WR)
            return True
        elif opcode == 9:
            handler.wfile.write(_frame(payload, 0x8A))
        elif opcode != 0xA:
            raise _Refused(f"received unhandled websocket opcode {opcode}")
    return False
