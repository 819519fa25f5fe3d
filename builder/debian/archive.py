"""Fetching verified files from a Debian archive: signed Release → Packages (by its Release hash) → .deb.

Every byte used downstream has been checked against the chain of checksums rooted in the Release
signature. Where no Debian archive keyring is installed the signature cannot be checked; that is said
clearly through ``Progress.note`` and the hash chain is still enforced.

Caching: ``.deb`` files by SHA256 under ``cache_dir("debs")`` (kept), index files by SHA256 under
``cache_dir("debian-index")`` (pruned after a few days), the signed InRelease for ``index_ttl`` seconds.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import lzma
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import IO, cast
from urllib.parse import urlsplit, urlunsplit

import requests

from builder.cachedir import cache_dir, content_key
from builder.debian.deb822 import compare_versions, iter_stanzas
from builder.debian.release import Release, check_suite, parse_release
from builder.debian.signature import default_keyrings, verify_detached, verify_inline
from builder.errors import ImgbuildError
from builder.fsutil import part_path, sweep_parts, write_atomic
from builder.progress import NullProgress, Progress

DEFAULT_MIRROR = "http://deb.debian.org/debian"
INDEX_TTL = 600  # seconds an InRelease is reused before it is fetched again
INDEX_KEEP_DAYS = 3
CHUNK = 1 << 20


class ArchiveError(ImgbuildError):
    """The archive could not be reached, or served something that does not match its signed indexes."""


class NotFound(ArchiveError):
    pass


@dataclass(frozen=True)
class PackageRef:
    """One package as the verified Packages index describes it."""

    name: str
    version: str
    architecture: str
    filename: str  # pool path relative to the mirror root
    size: int
    sha256: str


def redact_url(url: str) -> str:
    """A URL safe to print: any user:password is replaced."""
    parts = urlsplit(url)
    if parts.username or parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        parts = parts._replace(netloc=f"***@{host}")
    return urlunsplit(parts)


class _HashingWriter:
    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, chunk: bytes) -> None:
        self.out.write(chunk)
        self.sha256.update(chunk)
        self.size += len(chunk)


class Archive:
    """A Debian mirror, read through its signed chain of checksums."""

    def __init__(
        self,
        mirror: str = DEFAULT_MIRROR,
        *,
        proxy: str | None = None,
        keyrings: Sequence[Path] | None = None,
        progress: Progress = NullProgress(),
        session: requests.Session | None = None,
        index_ttl: float = INDEX_TTL,
        timeout: float = 60,
    ) -> None:
        self.mirror = mirror.rstrip("/")
        if urlsplit(self.mirror).scheme not in ("http", "https"):
            raise ImgbuildError(f"mirror must be an http:// or https:// URL, not {redact_url(mirror)!r}")
        self.keyrings = list(default_keyrings() if keyrings is None else keyrings)
        self.progress = progress
        self.index_ttl = index_ttl
        self.timeout = timeout
        self.session = session or requests.Session()
        self.session.verify = True
        if proxy:
            self.session.proxies.update({"http": proxy, "https": proxy})
        self._releases: dict[str, Release] = {}
        self._warned_unsigned = False

    # --- HTTP ------------------------------------------------------------------------------------
    def _url(self, path: str) -> str:
        return f"{self.mirror}/{path.lstrip('/')}"

    @contextlib.contextmanager
    def _get(self, path: str) -> Iterator[requests.Response]:
        url = self._url(path)
        try:
            resp = self.session.get(url, stream=True, timeout=(15, self.timeout))
        except requests.RequestException as exc:
            raise ArchiveError(f"cannot reach the Debian mirror: {redact_url(url)}", detail=str(exc)) from exc
        try:
            if resp.status_code == 404:
                raise NotFound(f"not on the mirror (404): {redact_url(url)}")
            if resp.status_code != 200:
                raise ArchiveError(f"mirror answered HTTP {resp.status_code} for {redact_url(url)}")
            yield resp
        finally:
            resp.close()

    def _download(self, path: str, out: IO[bytes], label: str) -> tuple[str, int]:
        """Stream *path* into *out*; return (sha256, size)."""
        writer = _HashingWriter(out)
        with self._get(path) as resp:
            total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length", "").isdigit() else None
            try:
                for chunk in resp.iter_content(CHUNK):
                    writer.write(chunk)
                    self.progress.transfer(label, writer.size, total)
            except requests.RequestException as exc:
                raise ArchiveError(f"download interrupted: {redact_url(self._url(path))}", detail=str(exc)) from exc
        return writer.sha256.hexdigest(), writer.size

    def _fetch_bytes(self, path: str) -> bytes:
        buf = io.BytesIO()
        self._download(path, buf, path.rsplit("/", 1)[-1])
        return buf.getvalue()

    def _fetch_verified(self, paths: Sequence[str], dest: Path, size: int, sha256: str, label: str) -> Path:
        """Download the first of *paths* that exists to *dest*, accepting it only if size and SHA256 match."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        sweep_parts(dest.parent)  # downloads a killed run left
        last: NotFound | None = None
        for path in paths:
            try:
                with part_path(dest, mode=0o644) as tmp:
                    with open(tmp, "wb") as out:
                        got_hash, got_size = self._download(path, out, label)
                    if got_size != size or got_hash != sha256:
                        raise ArchiveError(
                            f"{redact_url(self._url(path))} does not match the archive's signed index "
                            f"(expected {size} bytes sha256 {sha256}, got {got_size} bytes sha256 {got_hash})"
                        )
                    os.replace(tmp, dest)
                    return dest
            except NotFound as exc:
                last = exc
        assert last is not None
        raise last

    # --- Release ---------------------------------------------------------------------------------
    def _index_cache(self) -> Path:
        return cache_dir("debian-index")

    def _cached_inrelease(self, suite: str) -> Path:
        return self._index_cache() / f"InRelease-{content_key([self.mirror, suite])[:24]}"

    def release(self, suite: str) -> Release:
        """The suite's Release, signature checked (or a clear warning when no keyring is available)."""
        if suite in self._releases:
            return self._releases[suite]
        cached = self._cached_inrelease(suite)
        raw: bytes | None = None
        if cached.exists() and time.time() - cached.stat().st_mtime < self.index_ttl:
            raw = cached.read_bytes()
        release: Release | None = None
        if raw is None:
            try:
                raw = self._fetch_bytes(f"dists/{suite}/InRelease")
            except NotFound:
                release = self._release_detached(suite)
        if release is None:
            assert raw is not None
            release = self._release_inline(suite, raw)
            with contextlib.suppress(OSError):
                write_atomic(cached, raw)
        check_suite(release, suite)
        self._releases[suite] = release
        return release

    def _warn_unsigned(self, suite: str) -> None:
        if not self._warned_unsigned:
            self._warned_unsigned = True
            self.progress.note(
                f"WARNING: cannot check the signature of {suite}'s Release from {redact_url(self.mirror)}: "
                "no Debian archive keyring on this machine (apt-get install debian-archive-keyring gpgv). "
                "Files are still checked against the Release checksums, but the Release itself is not authenticated."
            )

    def _release_inline(self, suite: str, raw: bytes) -> Release:
        if self.keyrings:
            verified = verify_inline(raw, self.keyrings, what=f"{suite} InRelease")
            return parse_release(verified.text.decode("utf-8", "replace"), signed=True)
        self._warn_unsigned(suite)
        return parse_release(_strip_clearsign(raw).decode("utf-8", "replace"), signed=False)

    def _release_detached(self, suite: str) -> Release:
        data = self._fetch_bytes(f"dists/{suite}/Release")
        if not self.keyrings:
            self._warn_unsigned(suite)
            return parse_release(data.decode("utf-8", "replace"), signed=False)
        signature = self._fetch_bytes(f"dists/{suite}/Release.gpg")
        verified = verify_detached(data, signature, self.keyrings, what=f"{suite} Release")
        return parse_release(verified.text.decode("utf-8", "replace"), signed=True)

    # --- Packages --------------------------------------------------------------------------------
    def packages_index(self, suite: str, component: str = "main", arch: str = "amd64") -> Path:
        """A local copy of the suite's Packages index (compressed as served), verified against Release."""
        release = self.release(suite)
        base = f"{component}/binary-{arch}/Packages"
        for suffix in (".xz", ".gz", ""):
            entry = release.entry(base + suffix)
            if entry is None:
                continue
            dest = self._index_cache() / f"sha256-{entry.sha256}{suffix}"
            if dest.exists() and _sha256_of(dest) == entry.sha256:
                os.utime(dest)
                return dest
            self._prune_index_cache()
            paths = [f"dists/{suite}/{base}{suffix}"]
            if release.acquire_by_hash:
                paths.insert(0, f"dists/{suite}/{component}/binary-{arch}/by-hash/SHA256/{entry.sha256}")
            return self._fetch_verified(paths, dest, entry.size, entry.sha256, f"Packages{suffix} ({suite})")
        raise ArchiveError(f"the {suite} Release lists no {base} index for {component}/{arch}")

    def _prune_index_cache(self) -> None:
        cutoff = time.time() - INDEX_KEEP_DAYS * 86400
        for path in self._index_cache().glob("sha256-*"):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime < cutoff:
                    path.unlink()

    def find_packages(
        self, suite: str, names: Iterable[str], component: str = "main", arch: str = "amd64"
    ) -> dict[str, PackageRef]:
        """The newest version of each named package in one pass over the index; every name must exist.

        Answers are remembered per index hash (an index never changes under its hash), so later builds
        against the same Release do not decompress the index again.
        """
        wanted = set(names)
        index = self.packages_index(suite, component, arch)
        memo_path = index.with_name(index.name.split(".")[0] + ".lookup.json")
        try:
            memo: dict[str, dict] = json.loads(memo_path.read_text())
        except (FileNotFoundError, ValueError):
            memo = {}
        if not wanted <= set(memo):
            found = self._scan_index(index, suite, wanted - set(memo))
            memo.update({name: asdict(ref) for name, ref in found.items()})
            missing = sorted(wanted - set(memo))
            if missing:
                raise NotFound(f"package(s) {', '.join(missing)} not in {suite}/{component} for {arch}")
            with contextlib.suppress(OSError):
                write_atomic(memo_path, json.dumps(memo, sort_keys=True))
        try:
            return {name: PackageRef(**memo[name]) for name in wanted}
        except TypeError as exc:
            memo_path.unlink(missing_ok=True)
            raise ArchiveError(f"corrupt package lookup cache {memo_path} (removed; run again)") from exc

    def _scan_index(self, index: Path, suite: str, wanted: set[str]) -> dict[str, PackageRef]:
        found: dict[str, PackageRef] = {}
        with _open_index(index) as lines:
            for stanza in iter_stanzas(_stanzas_named(lines, wanted)):
                name = stanza.get("Package", "")
                try:
                    ref = PackageRef(
                        name=name,
                        version=stanza["Version"],
                        architecture=stanza.get("Architecture", ""),
                        filename=stanza["Filename"],
                        size=int(stanza["Size"]),
                        sha256=stanza["SHA256"].lower(),
                    )
                except (KeyError, ValueError) as exc:
                    raise ArchiveError(f"{suite} Packages: incomplete entry for {name}: {exc}") from exc
                if ref.filename.startswith("/") or ".." in ref.filename.split("/"):
                    raise ArchiveError(f"{suite} Packages: unsafe Filename for {name}: {ref.filename!r}")
                old = found.get(name)
                if old is None or compare_versions(ref.version, old.version) > 0:
                    found[name] = ref
        return found

    def find_package(self, suite: str, name: str, component: str = "main", arch: str = "amd64") -> PackageRef:
        return self.find_packages(suite, [name], component, arch)[name]

    # --- .deb ------------------------------------------------------------------------------------
    def fetch_deb(self, ref: PackageRef) -> Path:
        """The package file, checked against its Packages SHA256; cached by hash."""
        dest = cache_dir("debs") / f"{ref.sha256}.deb"
        if dest.exists() and dest.stat().st_size == ref.size and _sha256_of(dest) == ref.sha256:
            return dest
        self.progress.step(f"downloading {ref.name} {ref.version}")
        return self._fetch_verified([ref.filename], dest, ref.size, ref.sha256, f"{ref.name}.deb")


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _stanzas_named(lines: Iterable[str], names: set[str]) -> Iterator[str]:
    """Only the lines of stanzas whose Package is in *names* (a cheap pre-filter for a 50 MB index);
    stanzas stay separated by blank lines."""
    keep = False
    for line in lines:
        if line.startswith("Package:"):
            keep = line[8:].strip() in names
            if keep:
                yield "\n"
        if keep:
            yield line
        if not line.strip():
            keep = False


@contextlib.contextmanager
def _open_index(path: Path) -> Iterator[Iterator[str]]:
    if path.name.endswith(".xz"):
        fh: IO[bytes] = lzma.open(path, "rb")
    elif path.name.endswith(".gz"):
        fh = cast(IO[bytes], gzip.open(path, "rb"))
    else:
        fh = open(path, "rb")
    try:
        with io.TextIOWrapper(fh, encoding="utf-8", errors="replace") as text:
            yield iter(text)
    except (lzma.LZMAError, OSError, EOFError) as exc:
        raise ArchiveError(f"corrupt Packages index {path}: {exc}") from exc


def _strip_clearsign(raw: bytes) -> bytes:
    """The body of a clear-signed message, used only when no keyring exists (and then said loudly)."""
    lines = raw.decode("utf-8", "replace").splitlines()
    if not lines or not lines[0].startswith("-----BEGIN PGP SIGNED MESSAGE-----"):
        return raw
    body: list[str] = []
    i = 1
    while i < len(lines) and lines[i].strip():
        i += 1  # armor headers ("Hash: SHA256")
    for line in lines[i + 1 :]:
        if line.startswith("-----BEGIN PGP SIGNATURE-----"):
            break
        body.append(line[2:] if line.startswith("- ") else line)
    return ("\n".join(body) + "\n").encode()
