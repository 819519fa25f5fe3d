"""The HTTPS front of the simulator: request parsing, token auth, uploads, answers shaped like pveproxy's.

Mirrors pve-http-server (PVE::APIServer::AnyEvent) where clients can tell the difference:
- ``/api2/json/...`` only; unknown method/path: 501 ``Method 'GET /x' not implemented``;
- token auth ``Authorization: PVEAPIToken=USER@REALM!TOKENID=SECRET``; failures are 401 after a delay;
- chunked transfer encoding is refused (501); a non-upload body over 512 KiB is refused (501);
- parameters from the query string override those of a form-encoded (or JSON) body; ``k=v`` pairs
  are split like Perl's ``split(/=/)`` (an unencoded ``=`` in a value truncates it, as on PVE);
- errors carry PVE's message as the HTTP reason phrase; the JSON body is ``{"data": null}`` plus
  ``errors`` for parameter errors; a response with status >= 400 closes the connection;
- uploads are multipart/form-data with Content-Length, streamed to a temporary file with large
  reads (never held in memory), the file part named ``filename``.
"""

from __future__ import annotations

import json
import re
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.pvesim import websocket
from tests.pvesim.errors import ApiError, ParamError
from tests.pvesim.multipart import MultipartError, MultipartUpload, parse_content_type

if TYPE_CHECKING:
    from tests.pvesim.simulator import PveSimulator

LIMIT_MAX_POST = 512 * 1024
DRAIN_LIMIT = 16 << 20
READ_CHUNK = 1 << 20  # upload reads: large, so Python overhead per byte stays small
UPLOAD_PATH = re.compile(r"^/nodes/[^/]+/storage/[^/]+/upload/*$")
SECRET_KEYS = re.compile(r"pass|secret|token|ticket|otp", re.I)


def decode_urlencoded(data: str | bytes | None) -> dict[str, Any]:
    """``decode_urlencoded`` of pve-http-server, including its quirks (see module doc)."""
    res: dict[str, Any] = {}
    if not data:
        return res
    if isinstance(data, bytes):
        data = data.decode("latin-1")
    for kv in re.split(r"[&;]", data):
        parts = kv.split("=")
        k = urllib.parse.unquote_to_bytes(parts[0].replace("+", " ")).decode("utf-8", "replace")
        if len(parts) > 1:
            raw = urllib.parse.unquote_to_bytes(parts[1].replace("+", " "))
            v: str | None = raw.decode("utf-8", "replace")
            if res.get(k) is not None:
                v = f"{res[k]}\0{v}"
        else:
            v = None
        res[k] = v
    return {k: v for k, v in res.items() if v is not None or k}


def redact(params: dict[str, Any]) -> dict[str, Any]:
    return {k: ("***" if SECRET_KEYS.search(k) else v) for k, v in params.items()}


@dataclass
class Token:
    user: str  # root@pam
    tokenid: str  # imgbuild
    secret: str

    @classmethod
    def parse(cls, text: str) -> Token:
        m = re.fullmatch(r"(\S+@\S+?)!(\S+?)=(\S+)", text)
        if not m:
            raise ValueError("token must look like USER@REALM!TOKENID=SECRET")
        return cls(m.group(1), m.group(2), m.group(3))

    @property
    def full_id(self) -> str:
        return f"{self.user}!{self.tokenid}"


@dataclass
class LoggedRequest:
    method: str
    path: str
    params: dict[str, Any]
    status: int
    reason: str
    user: str | None
    time: float
    duration: float
    upload_bytes: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    def public(self) -> dict[str, Any]:
        return {
            "method": self.method, "path": self.path, "params": self.params, "status": self.status,
            "reason": self.reason, "user": self.user, "time": self.time, "duration": round(self.duration, 4),
            "upload_bytes": self.upload_bytes, **self.extra,
        }


class _Aborted(Exception):
    """The connection is gone (client hung up, or a fault dropped it): no answer can be sent."""


class SimHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], sim: PveSimulator, context: ssl.SSLContext, node: str) -> None:
        self.sim = sim
        self.node = node  # the cluster node answering on this address
        self.context = context
        self.connections: set[socket.socket] = set()
        self.conn_lock = threading.Lock()
        super().__init__(address, Handler)

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = self.socket.accept()
        tls = self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        with self.conn_lock:
            self.connections.add(tls)
        return tls, addr

    def shutdown_request(self, request: Any) -> None:
        with self.conn_lock:
            self.connections.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # TLS handshakes refused by clients (unknown CA, pin mismatch) and hang-ups are normal here.
        pass

    def close_all(self) -> None:
        with self.conn_lock:
            conns = list(self.connections)
        for conn in conns:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "pve-api-daemon/3.0"
    sys_version = ""
    timeout = 120
    rbufsize = 1 << 16
    server: SimHTTPServer

    # --- plumbing ------------------------------------------------------------------------------
    def setup(self) -> None:
        self.request.settimeout(self.timeout)
        self.request.do_handshake()
        super().setup()

    def log_message(self, format: str, *args: Any) -> None:  # our own request log instead
        pass

    def version_string(self) -> str:
        return self.server_version

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    @property
    def sim(self) -> PveSimulator:
        return self.server.sim

    def _send(self, status: int, reason: str, payload: Any = None, *, body: bytes | None = None,
              close: bool = False) -> None:
        reason = reason.rstrip("\n").split("\n")[0]
        reason = reason.encode("latin-1", "replace").decode("latin-1")
        if body is None:
            body = json.dumps(payload, separators=(",", ":")).encode() if payload is not None else b""
        close = close or status >= 400
        self.send_response(status, reason)
        if payload is not None:
            self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "max-age=0")
        self.send_header("Pragma", "no-cache")
        self.send_header("Expires", self.date_time_string())
        self.send_header("Connection", "close" if close else "Keep-Alive")
        self.end_headers()
        self.wfile.write(body)
        if close:
            self.close_connection = True
        self._status, self._reason = status, reason

    def _drain(self, length: int) -> None:
        while length > 0:
            chunk = self.rfile.read(min(READ_CHUNK, length))
            if not chunk:
                raise _Aborted("client hung up")
            length -= len(chunk)

    def _drain_chunked(self) -> None:
        total = 0
        while total <= DRAIN_LIMIT:
            line = self.rfile.readline(1024)
            if not line:
                return
            try:
                size = int(line.split(b";")[0].strip() or b"0", 16)
            except ValueError:
                return
            if size == 0:
                while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass
                return
            self._drain(size + 2)
            total += size

    # --- one request ---------------------------------------------------------------------------
    def _dispatch(self, method: str) -> None:
        t0 = time.monotonic()
        self._status, self._reason = 0, ""
        url = urllib.parse.urlsplit(self.path)
        path = urllib.parse.unquote(url.path)
        log = LoggedRequest(method, path, {}, 0, "", None, time.time(), 0.0)
        try:
            self._serve(method, path, url.query, log)
        except _Aborted as exc:
            log.extra["aborted"] = str(exc)
            self.close_connection = True
        except (ConnectionError, TimeoutError, ssl.SSLError, OSError) as exc:
            log.extra["aborted"] = f"{type(exc).__name__}: {exc}"
            self.close_connection = True
        finally:
            log.status, log.reason = self._status, self._reason
            log.duration = time.monotonic() - t0
            self.sim.record_request(log)

    def _serve(self, method: str, path: str, query: str, log: LoggedRequest) -> None:
        sim = self.sim
        te = self.headers.get("Transfer-Encoding")
        if te:
            msg = "chunked transfer encoding not supported" if te.lower() == "chunked" else f"Unknown transfer encoding '{te}'"
            sim.record_rejection("transfer-encoding", method, path, {}, {"_": msg})
            if te.lower() == "chunked":
                self._drain_chunked()  # so the client reads the 501 rather than a reset connection
            return self._send(501, msg, close=True)
        m = re.match(r"^/api2/+([a-z][a-z0-9]+)(/.*)?$", path)
        if path.startswith("/_pvesim/"):
            user = self._authenticate()
            if user is None:
                return self._unauthorized()
            return self._control(method, path, query)
        if not m:
            return self._send(501, f"no such file '{path}'", close=True)
        fmt, rel = m.group(1), m.group(2) or "/"
        rel = re.sub(r"/+$", "", rel) or "/"
        log.path = rel
        if fmt != "json":
            return self._send(501, f"no formatter for uri {rel}, {fmt}", close=True)
        user = self._authenticate()
        if user is None:
            return self._unauthorized()
        log.user = user
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return self._send(400, "bad request", close=True)
        if length and method not in ("POST", "PUT"):
            return self._send(501, f"Unexpected content for method '{method}'", close=True)
        rule = sim.faults.take_http_error(method, rel)
        if rule is not None:
            log.extra["fault"] = rule.ident
            self._drain(length)
            return self._send(rule.status, rule.message, {"data": None})
        if method == "POST" and UPLOAD_PATH.match(rel) and length:
            return self._upload(rel, length, user, query, log)
        if length > LIMIT_MAX_POST:
            sim.record_rejection("body-too-large", method, rel, {}, {"_": f"body of {length} bytes"})
            if length <= DRAIN_LIMIT:
                # PVE answers without reading; draining lets the client see the 501 instead of a reset
                self._drain(length)
            return self._send(501, "for data too large", close=True)
        raw = self.rfile.read(length) if length else b""
        if len(raw) != length:
            raise _Aborted("short body")
        ctype = (parse_content_type(self.headers.get("Content-Type", ""))[0] or "").lower()
        params: dict[str, Any]
        if method in ("POST", "PUT") and ctype == "application/json":
            try:
                params = json.loads(raw or b"{}")
            except ValueError as exc:
                return self._send(501, f"malformed JSON string: {exc}", close=True)
            if not isinstance(params, dict):
                return self._send(501, "malformed JSON: not an object", close=True)
        elif method in ("POST", "PUT") and ctype not in ("", "application/x-www-form-urlencoded"):
            return self._send(506, f"upload 'Content-Type '{self.headers.get('Content-Type')}' not implemented", close=True)
        else:
            params = decode_urlencoded(raw) if method in ("POST", "PUT") else {}
        params.update(decode_urlencoded(query))
        params.pop("_dc", None)
        log.params = redact(params)
        self._api(method, rel, params, user)

    def _api(self, method: str, rel: str, params: dict[str, Any], user: str, tmpfile: Path | None = None) -> None:
        sim = self.sim
        match = sim.schema.match(method, rel)
        if match is None or not sim.api.has_route(method, match[0].path):
            msg = f"Method '{method} {rel}' not implemented"
            version = sim.schema.version
            why = f"not simulated by pvesim (PVE {version} has it)" if match else f"not a PVE {version} API method"
            sim.record_rejection("not-implemented", method, rel, params, {"_": f"{msg}: {why}"})
            return self._send(501, msg, {"data": None})
        endpoint, path_params = match
        params.update(path_params)
        # pve-manager PVE/HTTPServer.pm rest_handler: tokens only where the method allows them, then the
        # declared permission check (pve-access-control RPCEnvironment check_api2_permissions), then the
        # proxy to the node in the path; the parameters are verified by the node that runs the method
        try:
            if not endpoint.info.get("allowtoken"):
                raise ApiError(403, f"Permission check failed (URI '{rel}' not available with API token, "
                                    "need proper ticket.)")
            with sim.lock:
                sim.access.check_api(endpoint.info.get("permissions"), user, params)
                node = sim.api.route_to(endpoint.info, params, self.server.node)
        except ApiError as exc:
            if exc.status == 403:
                sim.record_rejection("permission", method, rel, params, {"_": exc.message})
            elif exc.status == 595:  # a node that is down: a client should not have chosen it
                sim.record_rejection("route", method, rel, params, {"_": exc.message})
            return self._send(exc.status, exc.message, {"data": None})
        sim.schema.normalize(endpoint, params)
        errors = sim.schema.validate(endpoint, params)
        if errors:
            sim.record_rejection("schema", method, rel, params, errors)
            return self._send(400, "Parameter verification failed.", {"data": None, "errors": errors})
        try:
            if tmpfile is not None:
                data: Any = sim.api.upload(params, user, tmpfile, via=self.server.node)
                total = None
            else:
                result = sim.api.call(method, endpoint.path, params, user, node=node)
                data, total = result.data, result.total
        except ParamError as exc:
            sim.record_rejection("probe" if exc.probe else "param", method, rel, params, exc.errors or {})
            return self._send(400, exc.message, {"data": None, "errors": exc.errors})
        except ApiError as exc:
            if exc.status == 403:
                sim.record_rejection("permission", method, rel, params, {"_": exc.message})
            payload: dict[str, Any] = {"data": None}
            if exc.errors:
                payload["errors"] = exc.errors
            return self._send(exc.status, exc.message, payload)
        if websocket.wants_upgrade(self, method, rel):  # pve-http-server: upgraded once the call allowed it
            return websocket.upgrade(self, rel, data)
        payload = {"data": data}
        if total is not None:
            payload["total"] = total
        self._send(200, "OK", payload, close=tmpfile is not None)

    # --- auth ----------------------------------------------------------------------------------
    def _authenticate(self) -> str | None:
        header = self.headers.get("Authorization") or ""
        m = re.search(r"(?:^|\s)PVEAPIToken(?:=|:)([^;]*)", header)
        if not m:
            return None
        value = urllib.parse.unquote(m.group(1)).strip()
        tm = re.fullmatch(r"(\S+@\S+?)!(\S+?)[=:](\S+)", value)
        if not tm:
            return None
        with self.sim.lock:
            return self.sim.access.authenticate(tm.group(1), tm.group(2), tm.group(3))

    def _unauthorized(self) -> None:
        time.sleep(self.sim.auth_delay)
        has_header = bool(self.headers.get("Authorization") or self.headers.get("Cookie"))
        self._send(401, "authentication failure" if has_header else "No ticket", close=True)

    # --- uploads -------------------------------------------------------------------------------
    def _upload(self, rel: str, length: int, user: str, query: str, log: LoggedRequest) -> None:
        sim = self.sim
        ctype = self.headers.get("Content-Type", "")
        ct, boundary = parse_content_type(ctype)
        if not (boundary and ct == "multipart/form-data"):
            sim.record_rejection("upload", "POST", rel, {}, {"_": f"upload 'Content-Type '{ctype}' not implemented"})
            return self._send(501, f"upload 'Content-Type '{ctype}' not implemented", close=True)
        self.close_connection = True  # PVE: no keep-alive after an upload
        drop = sim.faults.take_drop_upload(rel)
        tmpfile = sim.new_upload_tmpfile()
        upload = MultipartUpload(boundary, tmpfile)
        received = 0
        try:
            for chunk in self._body_chunks(length, drop.after_bytes if drop is not None else None):
                received += len(chunk)
                upload.feed(chunk)
            if drop is not None:
                log.extra["fault"] = drop.ident
                self._drop_connection()
                raise _Aborted(f"fault: connection dropped after {received} bytes")
            upload.finish()
        except (_Aborted, OSError, MultipartError) as exc:
            upload.discard()
            log.upload_bytes = received
            if isinstance(exc, MultipartError):
                sim.record_rejection("upload", "POST", rel, {}, {"_": str(exc)})
                return self._send(501, str(exc), close=True)
            raise _Aborted(str(exc)) from None
        log.upload_bytes = received
        if not upload.complete:
            upload.discard()
            sim.record_rejection("upload", "POST", rel, upload.fields, {"_": upload.problem or "upload failed"})
            return self._send(501, "upload failed", close=True)
        params = decode_urlencoded(query)
        params.update(upload.fields)
        params["filename"] = upload.filename
        log.params = redact(params)
        log.extra["upload_file_bytes"] = upload.file_bytes
        sim.record_upload(params, upload.file_bytes)
        try:
            self._api("POST", rel, params, user, tmpfile)
        finally:
            if self._status != 200:
                upload.discard()

    def _body_chunks(self, length: int, stop_at: int | None) -> Iterator[memoryview]:
        """The request body in chunks of up to 1 MiB, read straight from the TLS socket.

        Bytes already buffered by ``rfile`` (read with the headers) come first; after that the
        socket is read with ``recv_into`` into one reused buffer: no allocation per chunk and no
        per-record Python buffering layer. (A reader thread plus a writer thread was tried and is
        slower: the two threads convoy on the GIL at every 16 KiB TLS record.)
        *stop_at*: stop after that many bytes (the dropped-connection fault).
        """
        limit = length if stop_at is None else min(length, stop_at)
        done = 0
        if limit > 0:
            first = self.rfile.read1(min(limit, self.rbufsize))  # what rfile buffered, or one read
            if not first:
                raise _Aborted(f"client hung up after 0 of {length} bytes")
            done = len(first)
            yield memoryview(first)
        sock = self.request
        view = memoryview(bytearray(READ_CHUNK))
        while done < limit:
            filled = 0
            want = min(len(view), limit - done)
            while filled < want:
                n = sock.recv_into(view[filled:want])
                if not n:
                    raise _Aborted(f"client hung up after {done + filled} of {length} bytes")
                filled += n
            done += filled
            yield view[:filled]

    def _drop_connection(self) -> None:
        try:
            self.request.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        try:
            self.request.close()
        except OSError:
            pass

    # --- test-only control endpoints (subprocess mode) ------------------------------------------
    def _control(self, method: str, path: str, query: str) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw else {}
            q = dict(urllib.parse.parse_qsl(query))
            data = self.sim.control(method, path[len("/_pvesim") :], q, body)
        except (KeyError, ValueError, TypeError) as exc:
            return self._send(400, f"pvesim control: {exc}", {"data": None, "error": str(exc)})
        self._send(200, "OK", {"data": data})
