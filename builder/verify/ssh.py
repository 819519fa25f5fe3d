"""SSH to a guest with paramiko, its host key pinned to out/RECIPE/known_hosts. Never auto-accepts."""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from pathlib import Path

import paramiko

from builder.errors import ImgbuildError
from builder.targets.base import Endpoint


class HostKeyMismatch(ImgbuildError):
    pass


def pinned_key(known_hosts: Path) -> paramiko.PKey:
    """The host key recorded for the guest (first entry of its known_hosts file)."""
    for line in known_hosts.read_text().splitlines():
        parts = line.split()
        if len(parts) >= 3 and not line.startswith("#"):
            try:
                return paramiko.PKey.from_type_string(parts[1], base64.b64decode(parts[2]))
            except (ValueError, paramiko.SSHException) as exc:
                raise ImgbuildError(f"{known_hosts}: unreadable host key: {exc}") from exc
    raise ImgbuildError(f"{known_hosts}: no host key recorded (render the recipe first)")


def fingerprint(key: paramiko.PKey) -> str:
    import hashlib

    return "SHA256:" + base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")


@dataclass
class Result:
    status: int
    stdout: str
    stderr: str


class GuestShell:
    """An SSH session to a guest: connect with the pinned key, run commands."""

    def __init__(self, endpoint: Endpoint, user: str, known_hosts: Path, key_file: Path | None) -> None:
        self.endpoint = endpoint
        self.user = user
        self.known_hosts = known_hosts
        self.key_file = key_file
        self.client: paramiko.SSHClient | None = None

    def connect(self, timeout: float) -> None:
        """Connect, retrying while the guest boots. A host key mismatch fails at once."""
        expected = pinned_key(self.known_hosts)
        deadline = time.monotonic() + timeout
        last = "no attempt"
        while True:
            client = paramiko.SSHClient()
            client.set_missing_host_key_policy(paramiko.RejectPolicy())
            name = self.endpoint.host if self.endpoint.port == 22 else f"[{self.endpoint.host}]:{self.endpoint.port}"
            client.get_host_keys().add(name, expected.get_name(), expected)
            try:
                client.connect(
                    self.endpoint.host, port=self.endpoint.port, username=self.user,
                    key_filename=str(self.key_file) if self.key_file else None,
                    allow_agent=self.key_file is None, look_for_keys=self.key_file is None,
                    timeout=10, banner_timeout=20, auth_timeout=20,
                )
                self.client = client
                return
            except paramiko.BadHostKeyException as exc:
                client.close()
                raise HostKeyMismatch(
                    f"SSH host key of {self.endpoint.host}:{self.endpoint.port} does not match {self.known_hosts}",
                    detail=f"expected {fingerprint(exc.expected_key)}, the guest offered {fingerprint(exc.key)}; "
                           "refusing to connect",
                ) from exc
            except (TimeoutError, OSError, paramiko.SSHException, EOFError) as exc:
                client.close()
                last = f"{type(exc).__name__}: {exc}"
            if time.monotonic() >= deadline:
                raise ImgbuildError(f"cannot log in over SSH to {self.user}@{self.endpoint.host}:{self.endpoint.port} "
                                    f"within {timeout:.0f}s", detail=f"last error: {last}")
            time.sleep(3)

    def run(self, command: str, timeout: float = 120) -> Result:
        if self.client is None:
            raise ImgbuildError("not connected")
        _, stdout, stderr = self.client.exec_command(command, timeout=timeout)
        out = stdout.read().decode("utf-8", "replace")
        err = stderr.read().decode("utf-8", "replace")
        return Result(stdout.channel.recv_exit_status(), out, err)

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None

    def __enter__(self) -> GuestShell:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
