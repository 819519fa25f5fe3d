"""A small forwarding HTTP proxy on loopback, for a recipe's ``mirror.proxy``: it relays apt's plain-HTTP
requests (absolute URIs) to the mirror and records them, so a test can see the build went through it."""

from __future__ import annotations

import http.client
import http.server
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authorization", "proxy-connection", "te", "trailer",
              "transfer-encoding", "upgrade"}


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.0"  # one request per connection: simple, and apt copes
    seen: list[str]
    auth: list[str | None]

    def do_GET(self) -> None:
        self._relay()

    def do_HEAD(self) -> None:
        self._relay()

    def _relay(self) -> None:
        self.seen.append(self.path)
        self.auth.append(self.headers.get("Proxy-Authorization"))
        url = urlsplit(self.path)
        if url.scheme != "http" or not url.hostname:
            self.send_error(400, "absolute http:// URI expected")
            return
        upstream = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=60)
        try:
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            upstream.request(self.command, url.path + (f"?{url.query}" if url.query else ""), headers=headers)
            resp = upstream.getresponse()
            self.send_response(resp.status, resp.reason)
            for key, value in resp.getheaders():
                if key.lower() not in HOP_BY_HOP:
                    self.send_header(key, value)
            self.send_header("Connection", "close")
            self.end_headers()
            if self.command != "HEAD":
                while chunk := resp.read(1 << 16):
                    self.wfile.write(chunk)
        except OSError as exc:
            self.send_error(502, str(exc))
        finally:
            upstream.close()

    def log_message(self, format: str, *args: object) -> None:
        pass


@contextmanager
def forwarding_proxy() -> Iterator[tuple[str, list[str], list[str | None]]]:
    """(``http://127.0.0.1:PORT/``, the URIs requested, the Proxy-Authorization header of each), while running."""
    seen: list[str] = []
    auth: list[str | None] = []
    handler = type("Handler", (_Handler,), {"seen": seen, "auth": auth})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", seen, auth
    finally:
        server.shutdown()
        server.server_close()
