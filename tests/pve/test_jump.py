"""Reaching unroutable guest addresses through an SSH jump host (paramiko, pinned host key)."""

from __future__ import annotations

import socket
import socketserver
import threading
from collections.abc import Iterator
from pathlib import Path

import paramiko
import pytest

from builder.errors import ImgbuildError
from builder.targets.base import VM
from builder.targets.pve.config import JumpHostConfig, load_config
from builder.targets.pve.jump import JumpHost
from builder.targets.pve.target import PveTarget
from tests.pve.jumphost import JumpServer


class _Echo(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        while data := self.request.recv(65536):
            self.request.sendall(b"echo:" + data)


@pytest.fixture
def echo() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield "127.0.0.1", int(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
def jump_server(echo: tuple[str, int], tmp_path: Path) -> Iterator[JumpServer]:
    routes = {("192.168.1.250", 22): echo}
    with JumpServer(lambda host, port: routes.get((host, port)), tmp_path) as server:
        yield server


def config(server: JumpServer, known_hosts: Path) -> JumpHostConfig:
    return JumpHostConfig(host="127.0.0.1", port=server.port, user="jump", known_hosts=known_hosts,
                          key_file=server.client_key_file)


def test_forward_reaches_the_guest_through_the_jump_host(jump_server: JumpServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(jump_server.known_hosts_line())
    jump = JumpHost(config(jump_server, known))
    try:
        port = jump.forward("192.168.1.250", 22)
        assert jump.forward("192.168.1.250", 22) == port  # one listener per destination
        for _ in range(3):  # each connection is its own channel
            with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
                sock.sendall(b"hello")
                assert sock.recv(100) == b"echo:hello"
        assert jump_server.opened == [("192.168.1.250", 22)] * 3
        # a destination the jump host cannot reach: the local connection is closed, nothing hangs
        other = jump.forward("192.168.1.99", 80)
        with socket.create_connection(("127.0.0.1", other), timeout=5) as sock:
            sock.settimeout(5)
            assert sock.recv(100) == b""
    finally:
        jump.close()


def test_target_endpoint_uses_the_jump_host(jump_server: JumpServer, tmp_path: Path) -> None:
    known = tmp_path / "known_hosts"
    known.write_text(jump_server.known_hosts_line())

    class _Client:  # endpoint() needs no API
        config = load_config("pve", {"PROXMOX_URL": "https://127.0.0.1:1", "PROXMOX_TOKEN_ID": "a@pve!b",
                                     "PROXMOX_TOKEN_SECRET": "s", "PROXMOX_NODE": "pve"})

    target = PveTarget(_Client(), jump=JumpHost(config(jump_server, known)))  # type: ignore[arg-type]
    try:
        ep = target.endpoint(VM("web-server", "pve", "100"), "192.168.1.250", 22)
        assert ep.host == "127.0.0.1" and ep.port != 22 and "ssh jump host jump@127.0.0.1" in ep.via
    finally:
        target.close()


def test_unknown_or_changed_jump_host_key_is_refused(jump_server: JumpServer, tmp_path: Path) -> None:
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(ImgbuildError, match="host key is not in .*refusing to connect"):
        JumpHost(config(jump_server, empty)).forward("192.168.1.250", 22)
    other = tmp_path / "other_known_hosts"
    other.write_text(jump_server.known_hosts_line(paramiko.ECDSAKey.generate(bits=256)))
    with pytest.raises(ImgbuildError, match="host key does not match .*refusing to connect"):
        JumpHost(config(jump_server, other)).forward("192.168.1.250", 22)
    assert jump_server.opened == []
