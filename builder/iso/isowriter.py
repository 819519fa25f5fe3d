"""Writing ISO 9660 images with pycdlib: one tree of files in, deterministic bytes out.

pycdlib stamps directory records, Rock Ridge TF entries and the volume descriptors with
``time.time()`` in local time. For reproducible images every one of those clocks is pinned to a
caller-given epoch in UTC while an image is built and written (``pinned_clock``).

Names: each file is given by its POSIX path; the Rock Ridge and Joliet names are that path, the ISO 9660
name is derived from it (upper case, d-characters, unique per directory).
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import threading
import time as _time
import types
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any, BinaryIO, cast

import pycdlib

from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import atomic_output
from builder.progress import NullProgress, Progress

# pycdlib modules that call time.time()/localtime() while building or writing an image.
_CLOCK_MODULES = ("pycdlib.dates", "pycdlib.headervd", "pycdlib.inplaceeditor", "pycdlib.pycdlib", "pycdlib.utils")
_clock_lock = threading.Lock()

# Epochs earlier than this are refused: ISO 9660 directory dates start at 1900 but many readers
# misbehave before 1980.
MIN_EPOCH = 315532800  # 1980-01-01T00:00:00Z


def _fake_time_module(epoch: int) -> types.SimpleNamespace:
    return types.SimpleNamespace(
        time=lambda: float(epoch),
        localtime=lambda secs=None: _time.gmtime(epoch if secs is None else secs),
        gmtime=_time.gmtime,
        strftime=_time.strftime,
        strptime=_time.strptime,
        struct_time=_time.struct_time,
        mktime=_time.mktime,
    )


@contextlib.contextmanager
def pinned_clock(epoch: int) -> Iterator[None]:
    """Make pycdlib see *epoch* as "now" and UTC as the local zone (one build at a time per process)."""
    import importlib

    modules = [importlib.import_module(name) for name in _CLOCK_MODULES]
    fake = _fake_time_module(epoch)
    with _clock_lock:
        saved = [(m, m.time) for m in modules if hasattr(m, "time")]
        for module, _ in saved:
            module.time = fake  # type: ignore[attr-defined]
        try:
            yield
        finally:
            for module, original in saved:
                module.time = original  # type: ignore[attr-defined]


def epoch_from_hash(digest: str) -> int:
    """A stable timestamp derived from a content hash: distinct content gets distinct volume dates
    (GRUB uses the ISO's modification date as its file system UUID), identical content the same."""
    return 1_000_000_000 + int(digest[:12], 16) % 1_000_000_000


def build_epoch(content_digest: str) -> int:
    """The timestamp written into an image: SOURCE_DATE_EPOCH when set (reproducible-builds.org),
    else derived from *content_digest*."""
    explicit = os.environ.get("SOURCE_DATE_EPOCH", "").strip()
    if explicit:
        try:
            return int(explicit)
        except ValueError:
            raise InvalidInput(f"SOURCE_DATE_EPOCH must be an integer, not {explicit!r}") from None
    return epoch_from_hash(content_digest)


# --- names ---------------------------------------------------------------------------------------

_BAD = re.compile(r"[^A-Z0-9_]")


def _d_chars(text: str) -> str:
    return _BAD.sub("_", text.upper())


def _iso_file_name(name: str, taken: set[str]) -> str:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    stem, ext = _d_chars(stem)[:24] or "_", _d_chars(ext)[:6]
    candidate, n = f"{stem}.{ext}", 1
    while candidate in taken:
        suffix = f"_{n}"
        candidate = f"{stem[: 24 - len(suffix)]}{suffix}.{ext}"
        n += 1
    taken.add(candidate)
    return candidate


def _iso_dir_name(name: str, taken: set[str]) -> str:
    base = _d_chars(name)[:30] or "_"
    candidate, n = base, 1
    while candidate in taken:
        suffix = f"_{n}"
        candidate = base[: 30 - len(suffix)] + suffix
        n += 1
    taken.add(candidate)
    return candidate


# --- the tree --------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Concat:
    """A file made of several parts read in turn (e.g. an initrd followed by a cpio archive), never joined
    in memory."""

    parts: tuple[bytes | Path, ...]

    @property
    def size(self) -> int:
        return sum(_part_size(p) for p in self.parts)

    def open(self) -> ConcatReader:
        return ConcatReader(self.parts)


Source = bytes | Path | Concat


def _part_size(part: bytes | Path) -> int:
    return len(part) if isinstance(part, bytes) else Path(part).stat().st_size


class ConcatReader(io.RawIOBase):
    """A seekable, read-only file object over a sequence of byte strings and files."""

    def __init__(self, parts: Sequence[bytes | Path]) -> None:
        self._parts: list[tuple[int, int, bytes | Path]] = []
        offset = 0
        for part in parts:
            size = _part_size(part)
            self._parts.append((offset, size, part))
            offset += size
        self._size = offset
        self._pos = 0
        self._handles: dict[int, io.BufferedReader] = {}

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self._size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def readinto(self, buffer: Any) -> int:
        view = memoryview(buffer).cast("B")
        done = 0
        for index, (start, size, part) in enumerate(self._parts):
            if done >= len(view) or self._pos >= self._size:
                break
            if not start <= self._pos < start + size:
                continue
            inner = self._pos - start
            want = min(len(view) - done, size - inner)
            if isinstance(part, bytes):
                view[done : done + want] = part[inner : inner + want]
                got = want
            else:
                fh = self._handles.get(index)
                if fh is None:
                    fh = self._handles[index] = open(part, "rb")
                fh.seek(inner)
                got = fh.readinto(view[done : done + want]) or 0
                if got == 0:
                    raise ImgbuildError(f"{part} shrank while it was being read")
            done += got
            self._pos += got
        return done

    def close(self) -> None:
        for fh in self._handles.values():
            fh.close()
        self._handles.clear()
        super().close()


@dataclass(frozen=True)
class IsoFile:
    path: str  # POSIX path inside the image, e.g. "isolinux/isolinux.bin"
    source: Source

    @property
    def size(self) -> int:
        if isinstance(self.source, bytes):
            return len(self.source)
        if isinstance(self.source, Concat):
            return self.source.size
        return self.source.stat().st_size


@dataclass(frozen=True)
class ElTorito:
    """Boot records. *bios* is an isolinux.bin path (gets a boot info table), *efi* a FAT image path."""

    bios: str | None = None
    efi: str | None = None
    catalog: str = "isolinux/boot.cat"


@dataclass
class _Dir:
    iso: str
    children: dict[str, _Dir] = field(default_factory=dict)
    taken: set[str] = field(default_factory=set)


def _check_path(path: str) -> PurePosixPath:
    p = PurePosixPath(path.strip("/"))
    if not p.parts or any(part in ("", ".", "..") for part in p.parts):
        raise ImgbuildError(f"invalid path inside ISO: {path!r}")
    return p


class IsoBuilder:
    """Collect files, then ``write`` a Rock Ridge + Joliet ISO 9660 image with optional El Torito boot."""

    def __init__(self, volume_id: str, *, epoch: int, publisher: str = "imgbuild") -> None:
        if not re.fullmatch(r"[A-Z0-9_]{1,32}", volume_id):
            raise ImgbuildError(f"ISO volume id must be 1-32 of A-Z 0-9 _: {volume_id!r}")
        if epoch < MIN_EPOCH:
            raise ImgbuildError(f"ISO timestamp {epoch} is before 1980")
        self.volume_id = volume_id
        self.epoch = int(epoch)
        self.publisher = publisher
        self.files: dict[str, IsoFile] = {}

    def add(self, path: str, source: Source) -> None:
        p = str(_check_path(path))
        if p in self.files:
            raise ImgbuildError(f"duplicate path inside ISO: {p}")
        self.files[p] = IsoFile(p, source)

    # -- mastering --
    def _iso_paths(self, extra: Sequence[str] = ()) -> tuple[dict[str, str], list[tuple[str, str]]]:
        """ISO 9660 path for every file (and each *extra* path, e.g. the boot catalog), and the directories
        to create (iso path, posix path) in creation order."""
        root = _Dir("")
        file_iso: dict[str, str] = {}
        dirs: list[tuple[str, str]] = []
        for path in sorted(self.files) + [str(_check_path(p)) for p in extra]:
            parts = PurePosixPath(path).parts
            node = root
            for i, part in enumerate(parts[:-1]):
                child = node.children.get(part)
                if child is None:
                    child = _Dir(f"{node.iso}/{_iso_dir_name(part, node.taken)}")
                    node.children[part] = child
                    dirs.append((child.iso, "/".join(parts[: i + 1])))
                node = child
            file_iso[path] = f"{node.iso}/{_iso_file_name(parts[-1], node.taken)};1"
        return file_iso, dirs

    def write(
        self,
        dest: Path,
        *,
        boot: ElTorito | None = None,
        progress: Progress = NullProgress(),
        label: str | None = None,
    ) -> Path:
        """Master the image to *dest* atomically."""
        dest = Path(dest)
        catalog = [boot.catalog] if boot is not None and (boot.bios or boot.efi) else []
        file_iso, dirs = self._iso_paths(catalog)
        iso = pycdlib.PyCdlib()
        handles: list[BinaryIO] = []
        label = label or dest.name

        def report(done: int, total: int, _opaque: object) -> None:
            progress.transfer(f"writing {label}", done, total)

        try:
            with pinned_clock(self.epoch):
                iso.new(
                    interchange_level=3,
                    vol_ident=self.volume_id,
                    sys_ident="LINUX",
                    pub_ident_str=self.publisher.upper(),
                    app_ident_str="IMGBUILD",
                    joliet=3,
                    rock_ridge="1.09",
                )
                for iso_path, posix in dirs:
                    iso.add_directory(iso_path, rr_name=posix.rsplit("/", 1)[-1], joliet_path="/" + posix)
                for path in sorted(self.files):
                    f = self.files[path]
                    fh: BinaryIO
                    if isinstance(f.source, bytes):
                        fh = io.BytesIO(f.source)
                    elif isinstance(f.source, Concat):
                        fh = f.source.open()  # type: ignore[assignment]
                    else:
                        fh = open(f.source, "rb")
                    handles.append(fh)
                    iso.add_fp(
                        fh,
                        f.size,
                        file_iso[path],
                        rr_name=PurePosixPath(path).name,
                        joliet_path="/" + path,
                        file_mode=0o100444,
                    )
                if boot is not None:
                    self._add_boot(iso, boot, file_iso)
                # 0600: a seed ISO holds the guest's private host key, an installer ISO the password hashes.
                with atomic_output(dest, mode=0o600) as out:
                    iso.write_fp(cast(BinaryIO, out), blocksize=1 << 20, progress_cb=report)
        except pycdlib.pycdlibexception.PyCdlibException as exc:
            raise ImgbuildError(f"cannot build {dest.name}: {exc}") from exc
        finally:
            with contextlib.suppress(Exception):
                iso.close()
            for fh in handles:
                fh.close()
        return dest

    def _add_boot(self, iso: pycdlib.PyCdlib, boot: ElTorito, file_iso: dict[str, str]) -> None:
        catalog = str(_check_path(boot.catalog))
        entries = [(path, False) for path in [boot.bios] if path] + [(path, True) for path in [boot.efi] if path]
        for i, (path, efi) in enumerate(entries):
            if path not in self.files:
                raise ImgbuildError(f"boot file {path} is not in the image")
            names: dict = {}
            if i == 0:  # the first entry creates the catalog
                names = dict(
                    bootcatfile=file_iso[catalog],
                    rr_bootcatname=PurePosixPath(catalog).name,
                    joliet_bootcatfile="/" + catalog,
                )
            if efi:
                iso.add_eltorito(file_iso[path], efi=True, platform_id=0xEF, **names)
            else:
                iso.add_eltorito(file_iso[path], boot_load_size=4, boot_info_table=True, **names)
