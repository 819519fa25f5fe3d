"""The QEMU guest agent over virtio-serial (a unix socket on the host side).

Each exchange connects, sends ``guest-sync`` with a random id and discards anything until that id
comes back (stale answers from an earlier attempt), then runs the command.
``guest-network-get-interfaces`` is the same data PVE's ``agent/network-get-interfaces`` returns.
"""

from __future__ import annotations

import ipaddress
import json
import random
import socket
import time
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError


class AgentUnavailable(ImgbuildError):
    """The guest agent did not answer (guest still booting, agent not running)."""


class GuestAgent:
    def __init__(self, path: Path, timeout: float = 3.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def call(self, command: str, arguments: dict[str, Any] | None = None) -> Any:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(str(self.path))
            except OSError as exc:
                raise AgentUnavailable(f"guest agent socket {self.path}: {exc.strerror or exc}") from exc
            reader = _LineReader(sock, self.timeout)
            sync_id = random.randint(1, 2**31)
            _send(sock, {"execute": "guest-sync", "arguments": {"id": sync_id}})
            while True:
                msg = reader.message()
                if msg.get("return") == sync_id:
                    break
            msg_out: dict[str, Any] = {"execute": command}
            if arguments:
                msg_out["arguments"] = arguments
            _send(sock, msg_out)
            reply = reader.message()
            if "error" in reply:
                err = reply["error"]
                raise ImgbuildError(f"guest agent {command} failed: {err.get('desc') or err.get('class')}")
            return reply.get("return")
        finally:
            sock.close()

    def network_interfaces(self) -> list[dict]:
        return list(self.call("guest-network-get-interfaces") or [])



def usable_addresses(interfaces: list[dict]) -> list[str]:
    """Addresses from ``guest-network-get-interfaces`` without loopback and link-local (pure).

    IPv4 first, in the order the agent reported them.
    """
    found: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for iface in interfaces:
        for entry in iface.get("ip-addresses") or []:
            try:
                addr = ipaddress.ip_address(str(entry.get("ip-address", "")).split("%")[0])
            except ValueError:
                continue
            if addr.is_loopback or addr.is_link_local or addr.is_unspecified or addr.is_multicast:
                continue
            if addr not in found:
                found.append(addr)
    return [str(a) for a in sorted(found, key=lambda a: a.version)]


def _send(sock: socket.socket, msg: dict) -> None:
    try:
        sock.sendall(json.dumps(msg).encode() + b"\n")
    except OSError as exc:
        raise AgentUnavailable(f"guest agent: write failed: {exc}") from exc


class _LineReader:
    def __init__(self, sock: socket.socket, timeout: float) -> None:
        self.sock = sock
        self.buf = b""
        self.deadline = time.monotonic() + timeout

    def message(self) -> dict:
        while True:
            while b"\n" not in self.buf:
                remaining = self.deadline - time.monotonic()
                if remaining <= 0:
                    raise AgentUnavailable("guest agent did not answer in time")
                self.sock.settimeout(remaining)
                try:
                    chunk = self.sock.recv(65536)
                except (TimeoutError, OSError) as exc:
                    raise AgentUnavailable(f"guest agent did not answer: {exc}") from exc
                if not chunk:
                    raise AgentUnavailable("guest agent connection closed")
                self.buf += chunk
            line, _, self.buf = self.buf.partition(b"\n")
            line = line.strip().lstrip(b"\xff")
            if not line:
                continue
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue  # a fragment from an earlier, abandoned exchange
