"""Password hashing with the system's libcrypt (libxcrypt): yescrypt by default, SHA-512 crypt on request.

Python's ``crypt`` module is gone in 3.13, so this calls libcrypt (always present on Debian) directly.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import hmac

from builder.errors import ImgbuildError

PREFIXES = {"yescrypt": b"$y$", "sha512": b"$6$"}


@functools.cache
def _libcrypt() -> ctypes.CDLL:
    name = ctypes.util.find_library("crypt") or "libcrypt.so.1"
    try:
        lib = ctypes.CDLL(name, use_errno=True)
    except OSError as exc:
        raise ImgbuildError("libcrypt not found: install the Debian package libcrypt1") from exc
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    return lib


def hash_password(password: str, scheme: str = "yescrypt") -> str:
    """A crypt(3) hash of *password* with a fresh random salt."""
    lib = _libcrypt()
    salt = lib.crypt_gensalt(PREFIXES[scheme], 0, None, 0)
    if not salt:
        raise ImgbuildError(f"libcrypt cannot make a {scheme} salt (libxcrypt too old?)")
    return _crypt(password, salt)


def verify_password(password: str, hashed: str) -> bool:
    try:
        return hmac.compare_digest(_crypt(password, hashed.encode()), hashed)
    except ImgbuildError:
        return False


def _crypt(password: str, setting: bytes) -> str:
    out = _libcrypt().crypt(password.encode("utf-8"), setting)
    if not out or out.startswith(b"*"):
        raise ImgbuildError("password hashing failed in libcrypt")
    return out.decode("ascii")
