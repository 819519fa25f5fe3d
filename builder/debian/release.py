"""A parsed Release file: the suite's identity and the SHA256 of every index it lists. Pure."""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.debian.deb822 import parse_stanza
from builder.errors import ImgbuildError


@dataclass(frozen=True)
class IndexEntry:
    path: str  # relative to dists/SUITE/, e.g. "main/binary-amd64/Packages.xz"
    size: int
    sha256: str


@dataclass(frozen=True)
class Release:
    fields: dict[str, str]
    files: dict[str, IndexEntry] = field(default_factory=dict)
    signed: bool = False  # False when the signature could not be checked (no keyring)

    @property
    def codename(self) -> str:
        return self.fields.get("Codename", "")

    @property
    def suite(self) -> str:
        return self.fields.get("Suite", "")

    @property
    def acquire_by_hash(self) -> bool:
        return self.fields.get("Acquire-By-Hash", "").strip().lower() == "yes"

    def entry(self, path: str) -> IndexEntry | None:
        return self.files.get(path)


def parse_release(text: str, *, signed: bool) -> Release:
    fields = parse_stanza(text)
    if "SHA256" not in fields:
        raise ImgbuildError("Release file has no SHA256 list: refusing an archive whose indexes cannot be checked")
    files: dict[str, IndexEntry] = {}
    for line in fields["SHA256"].splitlines():
        parts = line.split()
        if len(parts) != 3:
            continue
        digest, size, path = parts
        if len(digest) != 64:
            continue
        files[path] = IndexEntry(path=path, size=int(size), sha256=digest.lower())
    return Release(fields=fields, files=files, signed=signed)


def check_suite(release: Release, wanted: str) -> None:
    """The Release must describe the suite we asked for (guards against a mirror serving another one)."""
    if wanted not in (release.codename, release.suite):
        raise ImgbuildError(
            f"the archive's Release for {wanted!r} describes codename {release.codename!r} / suite {release.suite!r}"
        )
