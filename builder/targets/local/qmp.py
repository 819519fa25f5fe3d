"""A small QMP client (QEMU Machine Protocol over a unix socket): greeting, capabilities, execute.

Asynchronous events arriving between commands are kept in ``events`` (most recent last).
"""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError


class QMPError(ImgbuildError):
    """QEMU answered a command with an error (``class`` and ``desc`` from QMP)."""

    def __init__(self, command: str, error: dict) -> None:
        self.error_class = str(error.get("class", ""))
        self.desc = str(error.get("desc", ""))
        super().__init__(f"QMP {command} failed: {self.desc or self.error_class}")


class QMPClient:
    def __init__(self, path: Path, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout
        self.events: list[dict] = []
        self._sock: socket.socket | None = None
        self._buf = b""

    # --- connection ---------------------------------------------------------------------------
    def connect(self, wait: float = 0.0) -> QMPClient:
        """Connect and negotiate capabilities. Retries for up to *wait* seconds (socket not there yet)."""
        deadline = time.monotonic() + wait
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            sock.settimeout(self.timeout)
            try:
                sock.connect(str(self.path))
                break
            except OSError as exc:
                sock.close()
                if time.monotonic() >= deadline:
                    raise ImgbuildError(f"cannot connect to QEMU's QMP socket {self.path}: {exc.strerror or exc}") from exc
                time.sleep(0.1)
        self._sock = sock
        greeting = self._read_message()
        if "QMP" not in greeting:
            self.close()
            raise ImgbuildError(f"unexpected QMP greeting on {self.path}: {greeting!r}")
        self.execute("qmp_capabilities")
        return self

    def close(self) -> None:
        if self._sock is not None:
            try:
                self._sock.close()
            finally:
                self._sock = None
                self._buf = b""

    def __enter__(self) -> QMPClient:
        if self._sock is None:
            self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- commands -----------------------------------------------------------------------------
    def execute(self, command: str, arguments: dict[str, Any] | None = None, *, timeout: float | None = None) -> Any:
        """Run *command*; return its ``return`` value or raise QMPError."""
        if self._sock is None:
            raise ImgbuildError("QMP client is not connected")
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        self._sock.sendall(json.dumps(msg).encode() + b"\n")
        deadline = time.monotonic() + (timeout if timeout is not None else self.timeout)
        while True:
            reply = self._read_message(deadline)
            if "event" in reply:
                self.events.append(reply)
                continue
            if "error" in reply:
                raise QMPError(command, reply["error"])
            if "return" in reply:
                return reply["return"]

    def hmp(self, command_line: str) -> str:
        """A human monitor command through QMP (for commands QMP lacks, e.g. hostfwd_add)."""
        out = self.execute("human-monitor-command", {"command-line": command_line})
        return str(out or "")

    # --- wire ---------------------------------------------------------------------------------
    def _read_message(self, deadline: float | None = None) -> dict:
        assert self._sock is not None
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        while b"\n" not in self._buf:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise ImgbuildError(f"QMP: no answer from QEMU on {self.path} in time")
            self._sock.settimeout(remaining)
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError as exc:
                raise ImgbuildError(f"QMP: no answer from QEMU on {self.path} in time") from exc
            except OSError as exc:
                raise ImgbuildError(f"QMP connection to {self.path} failed: {exc}") from exc
            if not chunk:
                raise ImgbuildError(f"QMP: QEMU closed the connection on {self.path}")
            self._buf += chunk
        line, _, self._buf = self._buf.partition(b"\n")
        try:
            return json.loads(line)
        except json.JSONDecodeError as exc:
            raise ImgbuildError(f"QMP: malformed message from QEMU: {line[:200]!r}") from exc
