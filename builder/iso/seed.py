"""The cloud-init NoCloud seed ISO: volume CIDATA, ISO 9660 + Joliet + Rock Ridge, deterministic bytes."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from pathlib import Path

from builder.errors import ImgbuildError
from builder.iso.isowriter import IsoBuilder, build_epoch

SEED_FILES = ("user-data", "meta-data", "network-config", "vendor-data")
REQUIRED = ("user-data", "meta-data")
VOLUME_ID = "CIDATA"


def content_epoch(files: Mapping[str, bytes]) -> int:
    """SOURCE_DATE_EPOCH when set, else a timestamp derived from the content (stable across runs)."""
    digest = hashlib.sha256()
    for name in sorted(files):
        digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
    return build_epoch(digest.hexdigest())


def build_seed_iso(files: Mapping[str, bytes], dest: Path, *, epoch: int) -> Path:
    """Write the NoCloud seed ISO holding *files* (names from SEED_FILES) to *dest*, atomically."""
    unknown = sorted(set(files) - set(SEED_FILES))
    if unknown:
        raise ImgbuildError(f"not a NoCloud seed file: {', '.join(unknown)} (allowed: {', '.join(SEED_FILES)})")
    missing = [name for name in REQUIRED if name not in files]
    if missing:
        raise ImgbuildError(f"seed ISO needs {', '.join(missing)}")
    builder = IsoBuilder(VOLUME_ID, epoch=epoch)
    for name in SEED_FILES:
        if name in files:
            builder.add(name, bytes(files[name]))
    return builder.write(Path(dest))
