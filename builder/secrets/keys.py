"""ed25519 SSH key pairs in OpenSSH format, generated once and kept (mode 0600) so re-rendering is stable."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import write_atomic


@dataclass(frozen=True)
class KeyPair:
    private_path: Path
    private_openssh: str
    public_line: str  # "ssh-ed25519 AAAA... comment"

    @property
    def public_key(self) -> str:
        """Type and base64 only, without the comment."""
        return " ".join(self.public_line.split()[:2])


def ensure_keypair(private_path: Path, comment: str) -> KeyPair:
    """Load the key pair at *private_path* (and ``.pub``), generating both if absent."""
    pub_path = private_path.with_name(private_path.name + ".pub")
    if private_path.is_symlink():  # a key of someone else's (~/.ssh/id_ed25519?) must never become the VM's
        raise InvalidInput(f"cannot use the key {private_path}: a symbolic link; imgbuild keeps its own keys here",
                           detail="remove the link")
    if private_path.exists():
        pem = private_path.read_bytes()
        try:
            key = serialization.load_ssh_private_key(pem, password=None)
        except (ValueError, TypeError, UnsupportedAlgorithm) as exc:
            raise _unusable(private_path, f"not an unencrypted OpenSSH private key ({exc})") from None
        if not isinstance(key, Ed25519PrivateKey):
            raise _unusable(private_path, f"a {type(key).__name__.removeprefix('_')} key, not ed25519")
    else:
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        )
        write_atomic(private_path, pem, mode=0o600)
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    line = f"{public.decode()} {comment}"
    write_atomic(pub_path, line + "\n", mode=0o644)
    return KeyPair(private_path=private_path, private_openssh=pem.decode(), public_line=line)


def _unusable(path: Path, why: str) -> ImgbuildError:
    return ImgbuildError(f"cannot use the key {path}: {why}",
                         detail=f"remove it (and {path.name}.pub) and imgbuild makes a new one; a VM built with "
                                "the old key must then be rebuilt (make --rebuild)")
