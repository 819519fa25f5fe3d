"""Checking a Debian archive's Release signature with gpgv and the Debian archive keyrings."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.proc import require_tool, run

KEYRING_DIR = Path("/usr/share/keyrings")


def default_keyrings(directory: Path = KEYRING_DIR) -> list[Path]:
    """The Debian archive keyrings installed on this machine (package debian-archive-keyring), if any."""
    found: list[Path] = []
    for pattern in ("debian-archive-*.gpg", "debian-archive-*.pgp"):
        for path in sorted(directory.glob(pattern)):
            if "removed" in path.name or path in found:
                continue
            if path.is_file() and path.stat().st_size > 0:
                found.append(path)
    return found


@dataclass(frozen=True)
class Verified:
    """What gpgv vouched for: the signed text and the fingerprints of the good signatures."""

    text: bytes
    fingerprints: tuple[str, ...]


class SignatureError(ImgbuildError):
    """The Release file's signature is bad or made by no key we trust."""


def _judge(status: str, what: str) -> tuple[str, ...]:
    """Accept when at least one signature is valid and none is bad (apt's rule: unknown keys are ignored)."""
    valid: list[str] = []
    bad: list[str] = []
    missing: list[str] = []
    for line in status.splitlines():
        parts = line.split()
        if len(parts) < 3 or parts[0] != "[GNUPG:]":
            continue
        if parts[1] == "VALIDSIG":
            valid.append(parts[2])
        elif parts[1] in ("BADSIG", "EXPKEYSIG", "REVKEYSIG"):
            bad.append(f"{parts[1]} {parts[2]}")
        elif parts[1] == "NO_PUBKEY":
            missing.append(parts[2])
    if bad:
        raise SignatureError(f"{what}: bad signature ({', '.join(bad)}); refusing to trust this archive")
    if not valid:
        detail = f"signed by unknown keys {', '.join(missing)}" if missing else "no valid signature found"
        raise SignatureError(
            f"{what}: {detail}; update the Debian archive keyring (apt-get install debian-archive-keyring)"
        )
    return tuple(valid)


def _keyring_args(keyrings: Sequence[Path]) -> list[str]:
    args: list[str] = []
    for keyring in keyrings:
        args += ["--keyring", str(Path(keyring).resolve())]
    return args


def verify_inline(signed: bytes, keyrings: Sequence[Path], *, what: str = "InRelease") -> Verified:
    """Check a clear-signed InRelease and return the text that was actually signed (gpgv's own output)."""
    gpgv = require_tool("gpgv", "gpgv")
    with tempfile.TemporaryDirectory(prefix="imgbuild-gpgv-") as tmp:
        src = Path(tmp, "InRelease")
        out = Path(tmp, "Release")
        src.write_bytes(signed)
        proc = run(
            [gpgv, "--homedir", tmp, "--status-fd", "1", *_keyring_args(keyrings), "--output", out, src],
            check=False,
        )
        fingerprints = _judge(proc.stdout.decode("utf-8", "replace"), what)
        return Verified(out.read_bytes(), fingerprints)


def verify_detached(data: bytes, signature: bytes, keyrings: Sequence[Path], *, what: str = "Release") -> Verified:
    """Check Release against Release.gpg."""
    gpgv = require_tool("gpgv", "gpgv")
    with tempfile.TemporaryDirectory(prefix="imgbuild-gpgv-") as tmp:
        sig = Path(tmp, "Release.gpg")
        src = Path(tmp, "Release")
        sig.write_bytes(signature)
        src.write_bytes(data)
        proc = run([gpgv, "--homedir", tmp, "--status-fd", "1", *_keyring_args(keyrings), sig, src], check=False)
        return Verified(data, _judge(proc.stdout.decode("utf-8", "replace"), what))
