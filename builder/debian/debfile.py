"""Reading files out of a .deb in pure Python: the ar container, then data.tar.{xz,gz,bz2,zst} streamed.

Only the members asked for are written, each under a name the caller chose, so nothing in the package
decides where a file lands. Memory stays bounded: members are copied in chunks.
"""

from __future__ import annotations

import io
import os
import shutil
import tarfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Literal, cast

from builder.errors import ImgbuildError
from builder.fsutil import part_path

AR_MAGIC = b"!<arch>\n"


@dataclass(frozen=True)
class ArMember:
    name: str
    offset: int  # of the member's data in the file
    size: int


class DebError(ImgbuildError):
    """The .deb is not a well-formed Debian package."""


def ar_members(fp: BinaryIO) -> Iterator[ArMember]:
    fp.seek(0)
    if fp.read(8) != AR_MAGIC:
        raise DebError("not a Debian package (no ar header)")
    pos = 8
    while True:
        fp.seek(pos)
        header = fp.read(60)
        if not header:
            return
        if len(header) < 60 or header[58:60] != b"`\n":
            raise DebError("corrupt ar member header in .deb")
        name = header[0:16].decode("ascii", "replace").strip().rstrip("/")
        try:
            size = int(header[48:58].decode("ascii").strip())
        except ValueError as exc:
            raise DebError("corrupt ar member size in .deb") from exc
        yield ArMember(name=name, offset=pos + 60, size=size)
        pos += 60 + size + (size & 1)


class _Window(io.RawIOBase):
    """A read-only view of bytes [offset, offset+size) of an open file."""

    def __init__(self, fp: io.BufferedIOBase, offset: int, size: int) -> None:
        self._fp, self._start, self._size, self._pos = fp, offset, size, 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        remaining = self._size - self._pos
        if remaining <= 0:
            return 0
        view = memoryview(buffer)[: min(len(buffer), remaining)]
        self._fp.seek(self._start + self._pos)
        n = self._fp.readinto(view)
        if not n:
            raise DebError(".deb is truncated")
        self._pos += n
        return n


def _open_tar(fp: BinaryIO, member: ArMember) -> tarfile.TarFile:
    window = io.BufferedReader(_Window(cast(io.BufferedIOBase, fp), member.offset, member.size), buffer_size=1 << 20)
    suffix = member.name.removeprefix("data.tar").lstrip(".")
    if suffix in ("xz", "gz", "bz2"):
        return tarfile.open(fileobj=window, mode=cast(Literal["r|xz", "r|gz", "r|bz2"], f"r|{suffix}"))
    if suffix == "":
        return tarfile.open(fileobj=window, mode="r|")
    if suffix == "zst":
        try:
            import zstandard  # type: ignore[import-not-found]
        except ImportError as exc:
            raise DebError(
                f"{member.name}: zstd-compressed packages need the Python module 'zstandard' (pip install zstandard)"
            ) from exc
        stream = zstandard.ZstdDecompressor().stream_reader(window)
        return tarfile.open(fileobj=stream, mode="r|")
    raise DebError(f"unsupported .deb payload {member.name!r}")


def _normalise(name: str) -> str:
    return name.removeprefix("./").lstrip("/")


def iter_data(deb: Path) -> Iterator[tuple[tarfile.TarInfo, tarfile.TarFile]]:
    """Walk the members of the package's data.tar (paths normalised to 'usr/lib/...')."""
    with open(deb, "rb") as fp:
        data = next((m for m in ar_members(fp) if m.name.startswith("data.tar")), None)
        if data is None:
            raise DebError(f"{deb.name}: no data.tar member")
        try:
            with _open_tar(fp, data) as tar:
                for info in tar:
                    info.name = _normalise(info.name)
                    yield info, tar
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, ImgbuildError):
                raise
            raise DebError(f"{deb.name}: corrupt data archive: {exc}") from exc


def list_files(deb: Path) -> list[str]:
    return [info.name for info, _ in iter_data(deb) if info.isfile()]


def extract(deb: Path, wanted: Callable[[str], Path | None]) -> dict[str, Path]:
    """Write each regular file for which *wanted(path)* returns a destination; return {path: destination}.

    Destinations are written atomically (temporary name, then rename).
    """
    written: dict[str, Path] = {}
    for info, tar in iter_data(deb):
        if not info.isfile():
            continue
        dest = wanted(info.name)
        if dest is None:
            continue
        src = tar.extractfile(info)
        assert src is not None
        with part_path(dest, mode=0o644) as tmp:
            with open(tmp, "wb") as out:
                shutil.copyfileobj(src, out, 1 << 20)
            os.replace(tmp, dest)
        written[info.name] = dest
    return written


def extract_paths(deb: Path, paths: Iterable[str], dest_dir: Path) -> dict[str, Path]:
    """Extract exactly *paths* (package paths like 'usr/lib/ISOLINUX/isolinux.bin') into *dest_dir*, flat or
    mirrored by path; every requested path must exist."""
    wanted = {_normalise(p): dest_dir / _normalise(p) for p in paths}
    written = extract(deb, wanted.get)
    missing = sorted(set(wanted) - set(written))
    if missing:
        raise DebError(f"{deb.name}: missing {', '.join(missing)}")
    return written


def read_file(deb: Path, path: str) -> bytes:
    path = _normalise(path)
    for info, tar in iter_data(deb):
        if info.isfile() and info.name == path:
            src = tar.extractfile(info)
            assert src is not None
            return src.read()
    raise DebError(f"{deb.name}: no file {path}")
