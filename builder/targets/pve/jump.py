"""Reaching guest ports through an SSH jump host: loopback listeners forwarded over ``direct-tcpip``.

    jump = JumpHost(JumpHostConfig(host="pve1", port=22, user="root", known_hosts=Path("pve1_known_hosts")))
    port = jump.forward("192.168.1.250", 22)   # 127.0.0.1:port now reaches 192.168.1.250:22
    ...
    jump.close()

The jump host's key must be in the configured known_hosts file (``[host]:port`` for a port other
than 22); an unknown or different key is refused (paramiko RejectPolicy, never AutoAddPolicy). Each
connection accepted on a listener opens its own channel, so SSH sessions and HTTP requests run
unchanged through the loopback endpoint. The SSH connection is reopened if it drops.
"""

from __future__ import annotations

import logging
import select
import socket
import threading

import paramiko

from builder.errors import ImgbuildError
from builder.targets.pve.config import JumpHostConfig

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 15.0
BUFSIZE = 64 * 1024


class JumpHost:
    def __init__(self, config: JumpHostConfig) -> None:
        self.config = config
        self._client: paramiko.SSHClient | None = None
        self._lock = threading.Lock()
        self._forwards: dict[tuple[str, int], _Listener] = {}
        self._closed = False

    def describe(self) -> str:
        return f"ssh jump host {self.config.describe()}"

    # --- the SSH connection ----------------------------------------------------------------------
    def transport(self) -> paramiko.Transport:
        with self._lock:
            if self._closed:
                raise ImgbuildError(f"{self.describe()}: already closed")
            if self._client is not None:
                transport = self._client.get_transport()
                if transport is not None and transport.is_active():
                    return transport
                self._client.close()
                self._client = None
            self._client = self._connect()
            transport = self._client.get_transport()
            assert transport is not None
            transport.set_keepalive(30)
            return transport

    def _connect(self) -> paramiko.SSHClient:
        cfg = self.config
        client = paramiko.SSHClient()
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.load_host_keys(str(cfg.known_hosts))
        except (OSError, paramiko.SSHException) as exc:
            raise ImgbuildError(f"cannot read the jump host's known_hosts file {cfg.known_hosts}: {exc}") from None
        try:
            client.connect(
                cfg.host, port=cfg.port, username=cfg.user,
                key_filename=str(cfg.key_file) if cfg.key_file else None,
                allow_agent=cfg.key_file is None, look_for_keys=cfg.key_file is None,
                timeout=CONNECT_TIMEOUT, banner_timeout=CONNECT_TIMEOUT, auth_timeout=CONNECT_TIMEOUT,
            )
        except paramiko.BadHostKeyException as exc:
            client.close()
            raise ImgbuildError(
                f"{self.describe()}: host key does not match {cfg.known_hosts}; refusing to connect",
                detail=f"the server offered {exc.key.get_name()} {exc.key.fingerprint}",
            ) from None
        except paramiko.SSHException as exc:
            client.close()
            if "not found in known_hosts" in str(exc):
                raise ImgbuildError(
                    f"{self.describe()}: its host key is not in {cfg.known_hosts}; refusing to connect",
                    detail="add the jump host's key to that file (ssh-keyscan -p PORT HOST, then check its "
                           "fingerprint out of band)",
                ) from None
            raise ImgbuildError(f"{self.describe()}: SSH failed: {exc}") from None
        except OSError as exc:
            client.close()
            raise ImgbuildError(f"cannot connect to the {self.describe()}: {exc}") from None
        return client

    # --- forwards ----------------------------------------------------------------------------------
    def forward(self, host: str, port: int) -> int:
        """A loopback port on this machine whose connections reach *host*:*port* through the jump host."""
        key = (host, port)
        self.transport()  # fail here, clearly, if the jump host is unreachable
        with self._lock:
            listener = self._forwards.get(key)
            if listener is None or not listener.alive:
                listener = _Listener(self, host, port)
                self._forwards[key] = listener
            return listener.port

    def close(self) -> None:
        with self._lock:
            self._closed = True
            listeners = list(self._forwards.values())
            self._forwards.clear()
            client, self._client = self._client, None
        for listener in listeners:
            listener.close()
        if client is not None:
            client.close()


class _Listener:
    """127.0.0.1:<ephemeral> accepting connections, each piped over its own direct-tcpip channel."""

    def __init__(self, jump: JumpHost, host: str, port: int) -> None:
        self.jump = jump
        self.dest = (host, port)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.port = int(self.sock.getsockname()[1])
        self.alive = True
        self.thread = threading.Thread(target=self._accept, name=f"jump-{host}:{port}", daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while self.alive:
            try:
                conn, origin = self.sock.accept()
            except OSError:
                break
            threading.Thread(target=self._serve, args=(conn, origin), daemon=True,
                             name=f"jump-conn-{self.dest[0]}:{self.dest[1]}").start()
        self.alive = False

    def _serve(self, conn: socket.socket, origin: tuple[str, int]) -> None:
        try:
            channel = self.jump.transport().open_channel("direct-tcpip", self.dest, origin,
                                                         timeout=CONNECT_TIMEOUT)
        except (ImgbuildError, paramiko.SSHException, OSError, EOFError) as exc:
            log.debug("jump host: no channel to %s:%s: %s", *self.dest, exc)
            conn.close()
            return
        try:
            _pipe(conn, channel)
        finally:
            channel.close()
            conn.close()

    def close(self) -> None:
        self.alive = False
        for op in (lambda: self.sock.shutdown(socket.SHUT_RDWR), self.sock.close):  # shutdown wakes accept()
            try:
                op()
            except OSError:
                pass


def _pipe(conn: socket.socket, channel: paramiko.Channel) -> None:
    """Copy both ways until both sides closed (or the channel is gone)."""
    local_open, remote_open = True, True
    try:
        while local_open or remote_open:
            watch = ([conn] if local_open else []) + ([channel] if remote_open else [])
            readable, _, _ = select.select(watch, [], [], 30)
            if conn in readable:
                data = conn.recv(BUFSIZE)
                if data:
                    channel.sendall(data)
                else:
                    local_open = False
                    channel.shutdown_write()
            if channel in readable:
                data = channel.recv(BUFSIZE)
                if data:
                    conn.sendall(data)
                else:
                    remote_open = False
                    conn.shutdown(socket.SHUT_WR)
            if not remote_open and channel.closed:
                break
    except (OSError, EOFError, paramiko.SSHException):
        pass
