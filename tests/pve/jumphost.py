"""A small SSH jump server for tests: paramiko on 127.0.0.1 that accepts ``direct-tcpip`` channels.

    with JumpServer(resolve=lambda host, port: ("127.0.0.1", 40022)) as jump:
        jump.port, jump.known_hosts_line(), jump.client_key_file   # what a target's config pins and uses
        jump.opened                                                  # [(host, port)] the client asked for

*resolve* maps the destination a client asks for (a guest address and port, unroutable from here)
to where this machine really reaches it (the simulator's loopback forward for that VM and port); a
destination it does not know (None) is refused like an unreachable host. Only public-key auth with
the generated client key is accepted; the server's own host key is generated per instance.
"""

from __future__ import annotations

import select
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko

Resolve = Callable[[str, int], "tuple[str, int] | None"]


class _Interface(paramiko.ServerInterface):
    def __init__(self, server: JumpServer) -> None:
        self.server = server
        self.targets: dict[int, tuple[str, int]] = {}

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        if username == self.server.user and key == self.server.client_key:
            return paramiko.AUTH_SUCCESSFUL
        return paramiko.AUTH_FAILED

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_FAILED_ADMINISTRATIVELY_PROHIBITED  # no shells, no sessions

    def check_channel_direct_tcpip_request(self, chanid: int, origin: tuple[str, int],
                                           destination: tuple[str, int]) -> int:
        host, port = destination
        self.server.opened.append((host, port))
        target = self.server.resolve(host, port)
        if target is None:
            return paramiko.OPEN_FAILED_CONNECT_FAILED
        self.targets[chanid] = target
        return paramiko.OPEN_SUCCEEDED


class JumpServer:
    def __init__(self, resolve: Resolve, workdir: Path, *, user: str = "jump") -> None:
        self.resolve = resolve
        self.user = user
        self.host_key = paramiko.ECDSAKey.generate(bits=256)
        self.client_key = paramiko.ECDSAKey.generate(bits=256)
        self.client_key_file = workdir / "jump_client_key"
        self.client_key.write_private_key_file(str(self.client_key_file))
        self.opened: list[tuple[str, int]] = []
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(8)
        self.port = int(self.sock.getsockname()[1])
        self._transports: list[paramiko.Transport] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="jumpserver", daemon=True)

    def __enter__(self) -> JumpServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def known_hosts_line(self, key: paramiko.PKey | None = None) -> str:
        key = key or self.host_key
        return f"[127.0.0.1]:{self.port} {key.get_name()} {key.get_base64()}\n"

    def close(self) -> None:
        self._stop.set()
        for op in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):  # shutdown wakes accept()
            try:
                op()
            except OSError:
                pass
        for transport in list(self._transports):
            transport.close()
        self._thread.join(5)

    # --- serving -------------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True, name="jumpserver-session").start()

    def _session(self, conn: socket.socket) -> None:
        transport = paramiko.Transport(conn)
        self._transports.append(transport)
        transport.add_server_key(self.host_key)
        iface = _Interface(self)
        try:
            transport.start_server(server=iface)
        except (paramiko.SSHException, EOFError, OSError):
            transport.close()
            return
        while transport.is_active() and not self._stop.is_set():
            channel = transport.accept(timeout=0.5)
            if channel is None:
                continue
            target = iface.targets.pop(channel.get_id(), None)
            if target is None:
                channel.close()
                continue
            threading.Thread(target=self._forward, args=(channel, target), daemon=True,
                             name="jumpserver-forward").start()

    @staticmethod
    def _forward(channel: paramiko.Channel, target: tuple[str, int]) -> None:
        try:
            sock = socket.create_connection(target, timeout=10)
        except OSError:
            channel.close()
            return
        try:
            while True:
                readable, _, _ = select.select([sock, channel], [], [], 30)
                if sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        break
                    channel.sendall(data)
                if channel in readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    sock.sendall(data)
                if not readable and channel.closed:
                    break
        except (OSError, EOFError, paramiko.SSHException):
            pass
        finally:
            channel.close()
            sock.close()
