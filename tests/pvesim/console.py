"""A VM's VNC console as a PVE node serves it to noVNC: vncproxy, its ticket, and the proxy worker.

Follows qemu-server ``src/PVE/API2/Qemu.pm`` (``vncproxy``, ``vncwebsocket``) and ``src/PVE/CLI/qm.pm``
(``qm vncproxy``), pve-access-control ``src/PVE/AccessControl.pm`` (``assemble_vnc_ticket``,
``verify_vnc_ticket``), pve-common ``src/PVE/Ticket.pm`` (``verify_rsa_ticket``, ``generate_vnc_password``)
and ``src/PVE/Tools.pm`` (``next_vnc_port``):

- ``POST .../vncproxy`` picks a free TCP port in 5900-5999 on localhost, starts a ``vncproxy`` worker task
  listening there (``websocket=1``: plain TCP, localhost only) and answers ``user``, ``ticket``, ``port``,
  ``upid``, ``cert`` and, when a password is made, ``password``: 8 characters from '!' to '`'.
  PVE 8.4 makes the password only with ``generate-password=1`` (else the ticket itself is the VNC
  password); from qemu-server commit 282ec11d (2026-04, in our 9.1 schema: "Password is generated when
  required") it always makes one and prefixes the ticket with it (``PASSWORD:PVEVNC:...``).
- The ticket is ``PVEVNC:<hex time>::<signature>`` over ``<user>:/vms/<vmid>`` (and ``:<port>`` from
  commit c9ee34b5, 2026-04), accepted from -20 to 40 seconds of age; PVE signs with the node's RSA key,
  the simulator with an HMAC key of its own.
- The worker accepts one connection within 10 s ("connection timed out" otherwise), then does what
  ``qm vncproxy`` does: sets the VM's VNC password (QMP ``set_password``, ``expire_password +30``) and
  relays bytes between the connection and QEMU's VNC socket until either side closes. A VM that is not
  running fails it: "VM N not running", then "Failed to run vncproxy.".
- ``GET .../vncwebsocket?port=&vncticket=`` verifies the ticket for the calling user (an API token is a user
  here, so tokens work) and answers ``{"port": ...}``; pveproxy then upgrades the connection
  (tests/pvesim/websocket.py).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import select
import socket
import time
from collections.abc import Callable

from tests.pvesim.tasks import Task, TaskFailed

VNC_PORTS = range(5900, 6000)  # PVE::Tools::next_vnc_port: 5900 up to (not including) 6000
ACCEPT_TIMEOUT = 10.0  # $timeout in Qemu.pm vncproxy
IDLE_TIMEOUT = 15 * 60.0  # run_vnc_proxy in qm.pm
TICKET_MIN_AGE, TICKET_MAX_AGE = -20, 40  # verify_short_lived_ticket


def vnc_password() -> str:
    """``PVE::Ticket::generate_vnc_password``: 8 random characters between '!' and '`'."""
    return "".join(chr(ord("!") + secrets.randbelow(ord("`") - ord("!") + 1)) for _ in range(8))


class VncTickets:
    def __init__(self) -> None:
        self._key = secrets.token_bytes(32)

    def _sign(self, plain: str, user: str, path: str, port: int | None) -> str:
        data = f"{plain}:{user}:{path}" + (f":{port}" if port is not None else "")
        return base64.b64encode(hmac.new(self._key, data.encode(), hashlib.sha256).digest()).decode()

    def assemble(self, user: str, path: str, port: int | None, now: float | None = None) -> str:
        plain = f"PVEVNC:{int(time.time() if now is None else now):08X}"
        return f"{plain}::{self._sign(plain, user, path, port)}"

    def verify(self, ticket: str, user: str, path: str, port: int | None) -> bool:
        if len(ticket) > 9 and ticket[8] == ":" and ticket[9:].startswith("PVEVNC:"):
            ticket = ticket[9:]  # a password-prefixed ticket (verify_vnc_ticket strips the prefix)
        plain, sep, sig = ticket.partition("::")
        if not sep or not plain.startswith("PVEVNC:") or len(plain) != 15:
            return False
        try:
            age = time.time() - int(plain[7:], 16)
        except ValueError:
            return False
        good = hmac.compare_digest(sig, self._sign(plain, user, path, port))
        return good and TICKET_MIN_AGE < age < TICKET_MAX_AGE


def listen_on_vnc_port() -> tuple[int, socket.socket]:
    """The first free port of 5900-5999 on localhost, already listening (PVE tests each port by binding it)."""
    for port in VNC_PORTS:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            sock.close()
            continue
        sock.listen(1)
        return port, sock
    raise RuntimeError(f"unable to find free port ({VNC_PORTS.start}-{VNC_PORTS.stop})")


def proxy_worker(listener: socket.socket, display: Callable[[], socket.socket]) -> Callable[[Task], None]:
    """The body of the ``vncproxy`` task: accept one client, then relay it to the VM's VNC server."""

    def work(task: Task) -> None:
        try:
            client = _accept(listener, task)
        finally:
            listener.close()
        with client:
            try:
                vnc = display()
            except Exception as exc:  # what `qm vncproxy` prints before it exits non-zero
                task.log(str(exc))
                raise TaskFailed("Failed to run vncproxy.") from None
            with vnc:
                relay(client, vnc, task)

    return work


def _accept(listener: socket.socket, task: Task) -> socket.socket:
    deadline = time.monotonic() + ACCEPT_TIMEOUT
    listener.settimeout(0.2)
    while True:
        if task.stop_requested.is_set():
            raise TaskFailed("interrupted by signal")
        try:
            client, _ = listener.accept()
            client.settimeout(None)
            return client
        except TimeoutError:
            if time.monotonic() >= deadline:
                raise TaskFailed("connection timed out") from None


def relay(a: socket.socket, b: socket.socket, task: Task) -> None:
    """Bytes both ways until one side closes, the task is stopped, or nothing moves for IDLE_TIMEOUT."""
    last = time.monotonic()
    while not task.stop_requested.is_set():
        readable, _, _ = select.select([a, b], [], [], 0.5)
        if not readable:
            if time.monotonic() - last > IDLE_TIMEOUT:
                return
            continue
        last = time.monotonic()
        for src in readable:
            try:
                data = src.recv(1 << 16)
            except OSError:
                return
            if not data:
                return
            try:
                (b if src is a else a).sendall(data)
            except OSError:
                return
