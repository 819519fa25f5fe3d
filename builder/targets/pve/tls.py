"""TLS for the Proxmox VE API: verified against the system store, a CA file, or a pinned certificate.

Pinning uses urllib3's ``assert_fingerprint``: right after the TLS handshake, before a single byte of
the request (and so of the API token) is sent, the SHA-256 digest of the certificate the server
presented is compared with the pinned one and the connection is refused on any difference. Chain
and host name are not checked in that mode (PVE's self-signed node certificate would fail them);
the pin is stronger than both.

``TransferAdapter`` is for uploads: urllib3 sends a request body under the *connect* timeout, so a
short connect timeout would also limit every write of a multi-GiB upload; this adapter connects
with the short timeout and then writes with a generous one, in large blocks.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from requests.adapters import HTTPAdapter
from requests.utils import DEFAULT_CA_BUNDLE_PATH
from urllib3.connection import HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

UPLOAD_BLOCK = 1 << 20


@dataclass(frozen=True)
class TlsPolicy:
    """How the node's certificate is checked. ``verify`` is what requests takes (bool or CA path)."""

    verify: bool | str
    fingerprint: str | None = None  # colon-separated hex (as PVE shows it), when pinned
    insecure: bool = False

    @classmethod
    def choose(cls, *, ca_file: Path | None, fingerprint: str | None, insecure: bool) -> TlsPolicy:
        if insecure:
            return cls(verify=False, insecure=True)
        if fingerprint:
            return cls(verify=False, fingerprint=fingerprint)
        if ca_file:
            return cls(verify=str(ca_file))
        return cls(verify=True)

    def describe(self) -> str:
        if self.insecure:
            return "NOT verified (--insecure)"
        if self.fingerprint:
            return f"pinned certificate SHA-256 {self.fingerprint}"
        if isinstance(self.verify, str):
            return f"verified against {self.verify}"
        return "verified against the system CA store"


class PinningAdapter(HTTPAdapter):
    """An HTTPAdapter that refuses a server whose certificate digest differs from *fingerprint*."""

    def __init__(self, fingerprint: str | None = None, **kwargs: Any) -> None:
        self._pin = fingerprint.replace(":", "").lower() if fingerprint else None
        super().__init__(**kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        if self._pin:
            pool_kwargs["assert_fingerprint"] = self._pin
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)

    def __getstate__(self) -> dict[str, Any]:  # requests pickles adapters' attrs by name
        state: dict[str, Any] = dict(super().__getstate__())  # type: ignore[call-overload]
        state["_pin"] = self._pin
        return state


class TransferAdapter(PinningAdapter):
    """PinningAdapter for large request bodies: connect with the short timeout, write with *write_timeout*."""

    def __init__(self, fingerprint: str | None = None, *, write_timeout: float = 600.0, **kwargs: Any) -> None:
        self.write_timeout = write_timeout
        super().__init__(fingerprint, **kwargs)

    def init_poolmanager(self, connections: int, maxsize: int, block: bool = False, **pool_kwargs: Any) -> None:
        pool_kwargs["blocksize"] = UPLOAD_BLOCK
        super().init_poolmanager(connections, maxsize, block=block, **pool_kwargs)
        write_timeout = self.write_timeout

        class _Conn(HTTPSConnection):
            def request(self, method: str, url: str, body: Any = None, headers: Any = None, **kw: Any) -> None:
                if self.sock is None:
                    self.connect()  # under the connect timeout
                self.timeout = write_timeout  # urllib3 applies it to the socket before sending
                super().request(method, url, body=body, headers=headers, **kw)

        class _Pool(HTTPSConnectionPool):
            ConnectionCls = _Conn

        self.poolmanager.pool_classes_by_scheme = {"http": HTTPConnectionPool, "https": _Pool}

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["write_timeout"] = self.write_timeout
        return state


def connect_verified(host: str, port: int, *, verify: bool | str, fingerprint: str | None,
                     timeout: float) -> socket.socket:
    """One TLS connection to the node, checked exactly as the API calls' connections are: urllib3's
    HTTPSConnection with the settings requests and PinningAdapter give it (*verify*: the CA bundle or
    directory that requests would use, after $REQUESTS_CA_BUNDLE, or False; *fingerprint*: the pin, checked
    right after the handshake). For protocols that take the socket over, such as the VNC console's WebSocket.
    Raises urllib3's and ssl's exceptions as they are."""
    if verify is False:
        conn = HTTPSConnection(host, port, timeout=timeout, cert_reqs="CERT_NONE",
                               assert_fingerprint=fingerprint.replace(":", "").lower() if fingerprint else None)
    else:
        bundle = DEFAULT_CA_BUNDLE_PATH if verify is True else str(verify)
        directory = os.path.isdir(bundle)
        conn = HTTPSConnection(host, port, timeout=timeout, cert_reqs="CERT_REQUIRED",
                               ca_certs=None if directory else bundle, ca_cert_dir=bundle if directory else None)
    conn.connect()
    sock, conn.sock = conn.sock, None
    if sock is None:  # pragma: no cover - connect() either sets it or raises
        raise OSError(f"no connection to {host}:{port}")
    return sock
