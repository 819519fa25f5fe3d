"""Helpers for booting real guests in the local target's tests: keys, NoCloud seeds, PNG, SSH."""

from __future__ import annotations

import io
import logging
import struct
import time
import zlib
from dataclasses import dataclass
from pathlib import Path

import paramiko
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.iso.seed import build_seed_iso, content_epoch

# paramiko logs every refused connection while sshd is still starting, with a traceback: not news here.
logging.getLogger("paramiko").setLevel(logging.CRITICAL)


@dataclass(frozen=True)
class KeyPair:
    private_openssh: str
    public_openssh: str  # "ssh-ed25519 AAAA..."

    @classmethod
    def generate(cls) -> KeyPair:
        key = Ed25519PrivateKey.generate()
        private = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
        public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        return cls(private, public.decode())

    def paramiko_key(self) -> paramiko.Ed25519Key:
        return paramiko.Ed25519Key.from_private_key(io.StringIO(self.private_openssh))


def user_data(hostname: str, user_key: KeyPair, host_key: KeyPair) -> bytes:
    config = {
        "hostname": hostname,
        "users": [
            {
                "name": "debian",
                "shell": "/bin/bash",
                "sudo": "ALL=(ALL) NOPASSWD:ALL",
                "ssh_authorized_keys": [user_key.public_openssh],
            }
        ],
        "ssh_deletekeys": True,
        "ssh_genkeytypes": [],
        "ssh_keys": {"ed25519_private": host_key.private_openssh, "ed25519_public": host_key.public_openssh},
    }
    return ("#cloud-config\n" + yaml.safe_dump(config, sort_keys=False)).encode()


def dhcp_network(mac: str) -> bytes:
    config = {"version": 2, "ethernets": {"nic0": {"match": {"macaddress": mac}, "dhcp4": True}}}
    return yaml.safe_dump(config, sort_keys=False).encode()


def write_seed(dest: Path, *, instance_id: str, hostname: str, user: bytes, network: bytes) -> Path:
    files = {
        "meta-data": f"instance-id: {instance_id}\nlocal-hostname: {hostname}\n".encode(),
        "user-data": user,
        "network-config": network,
    }
    return build_seed_iso(files, dest, epoch=content_epoch(files))


def ssh_run(port: int, host_key: KeyPair, user_key: KeyPair, command: str, timeout: float) -> str:
    """Run *command* over SSH on 127.0.0.1:*port* with the host key pinned; retry until *timeout*."""
    host_pkey = host_key.paramiko_key()
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        client = paramiko.SSHClient()
        client.get_host_keys().add(f"[127.0.0.1]:{port}", "ssh-ed25519", host_pkey)
        client.set_missing_host_key_policy(paramiko.RejectPolicy())
        try:
            client.connect(
                "127.0.0.1", port=port, username="debian", pkey=user_key.paramiko_key(),
                look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=20, auth_timeout=20,
            )  # fmt: skip
            _, stdout, stderr = client.exec_command(command, timeout=30)
            out = stdout.read().decode()
            if stdout.channel.recv_exit_status() != 0:
                raise AssertionError(f"{command!r} failed: {stderr.read().decode()}")
            return out
        except (paramiko.SSHException, OSError, EOFError) as exc:
            if isinstance(exc, paramiko.BadHostKeyException):
                raise
            last = exc
            time.sleep(3)
        finally:
            client.close()
    raise AssertionError(f"no SSH on 127.0.0.1:{port} within {timeout:.0f}s: {last!r}")


def png_pixels(data: bytes) -> tuple[int, int, set[bytes]]:
    """(width, height, distinct RGB(A) pixel values) of an 8-bit truecolour PNG."""
    assert data.startswith(b"\x89PNG\r\n\x1a\n"), "not a PNG signature"
    pos, idat, width, height, ctype = 8, b"", 0, 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind = data[pos + 4 : pos + 8]
        payload = data[pos + 8 : pos + 8 + length]
        (crc,) = struct.unpack(">I", data[pos + 8 + length : pos + 12 + length])
        assert zlib.crc32(kind + payload) & 0xFFFFFFFF == crc, f"bad CRC in {kind!r}"
        if kind == b"IHDR":
            width, height, depth, ctype = struct.unpack(">IIBB", payload[:10])
            assert depth == 8 and ctype in (2, 6), f"unexpected PNG format depth={depth} type={ctype}"
        elif kind == b"IDAT":
            idat += payload
        elif kind == b"IEND":
            break
        pos += 12 + length
    bpp = 3 if ctype == 2 else 4
    raw = zlib.decompress(idat)
    stride = width * bpp
    prev = bytearray(stride)
    colours: set[bytes] = set()
    for y in range(height):
        ftype = raw[y * (stride + 1)]
        line = bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)])
        for x in range(stride):
            a = line[x - bpp] if x >= bpp else 0
            b = prev[x]
            c = prev[x - bpp] if x >= bpp else 0
            if ftype == 1:
                line[x] = (line[x] + a) & 0xFF
            elif ftype == 2:
                line[x] = (line[x] + b) & 0xFF
            elif ftype == 3:
                line[x] = (line[x] + (a + b) // 2) & 0xFF
            elif ftype == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[x] = (line[x] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        if y % 8 == 0:  # a sample of rows is enough to tell text from a blank screen
            colours.update(bytes(line[i : i + bpp]) for i in range(0, stride, bpp))
        prev = line
    return width, height, colours
