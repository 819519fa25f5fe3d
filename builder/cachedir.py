"""The cache directory: downloads and golden images, keyed by content.

Location: $IMGBUILD_CACHE, else $XDG_CACHE_HOME/imgbuild, else ~/.cache/imgbuild.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any


def cache_root() -> Path:
    explicit = os.environ.get("IMGBUILD_CACHE")
    if explicit:
        return Path(explicit)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "imgbuild"


def cache_dir(*parts: str) -> Path:
    path = cache_root().joinpath(*parts)
    path.mkdir(parents=True, exist_ok=True)
    return path


def content_key(data: Any) -> str:
    """A stable hex key for JSON-serialisable *data* (sorted keys, no whitespace)."""
    blob = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def sha256_file(path: Path, bufsize: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(bufsize):
            digest.update(chunk)
    return digest.hexdigest()


HASH_INDEX_ABOVE = 64 << 20  # smaller files are hashed every time: cheaper than the index


def cached_sha256(path: Path) -> str:
    """sha256 of *path*, remembered by (path, size, mtime, inode) so a multi-GiB image is hashed once."""
    from builder.fsutil import write_atomic

    st = path.stat()
    if st.st_size < HASH_INDEX_ABOVE:
        return sha256_file(path)
    key = f"{path}:{st.st_size}:{st.st_mtime_ns}:{st.st_ino}"
    index_file = cache_dir() / "sha256-index.json"
    try:
        index = json.loads(index_file.read_text())
    except (OSError, ValueError):
        index = {}
    if key in index:
        return str(index[key])
    digest = sha256_file(path)
    index = {k: v for k, v in index.items() if not k.startswith(f"{path}:")}
    index[key] = digest
    write_atomic(index_file, json.dumps(index, indent=0, sort_keys=True) + "\n")
    return digest
