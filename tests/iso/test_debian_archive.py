"""The Debian archive chain (signed Release -> Packages -> .deb) against a local signed fake archive,
including every kind of tampering, and .deb reading against packages built by dpkg-deb."""

from __future__ import annotations

import hashlib
import lzma
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.debian import Archive, ArchiveError, DebError, NotFound, extract_paths, list_files, read_file
from builder.debian.deb822 import compare_versions, iter_stanzas
from builder.debian.signature import SignatureError, default_keyrings
from builder.errors import ImgbuildError
from tests.iso.conftest import need_tool
from tests.iso.fake_archive import SUITE, FakeArchive, build_deb, make_key, serve

HELLO = {"usr/lib/test/hello.txt": b"hello from the fake archive\n", "usr/share/doc/hello/README": b"docs\n"}


class Notes:
    def __init__(self) -> None:
        self.notes: list[str] = []
        self.transfers: list[tuple[str, int, int | None]] = []

    def step(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        self.notes.append(text)

    def transfer(self, label: str, done: int, total: int | None) -> None:
        self.transfers.append((label, done, total))


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    need_tool("gpg", "gnupg")
    need_tool("gpgv", "gpgv")
    need_tool("dpkg-deb", "dpkg")
    base = tmp_path_factory.mktemp("keys")
    trusted = make_key(base / "trusted", "imgbuild test archive <archive@example.invalid>")
    other = make_key(base / "other", "someone else <other@example.invalid>")
    return base / "trusted", trusted, other


@pytest.fixture
def fake(tmp_path: Path, signing: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeArchive]:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    home, keyring, _ = signing
    archive = FakeArchive(root=tmp_path / "mirror", gnupg=home, keyring=keyring)
    archive.root.mkdir()
    archive.add_deb("hello", "1.0-1", HELLO)
    archive.add_deb("hello", "1.2-1", HELLO)  # newer: this one must be chosen
    archive.add_deb("other", "2:0.1", {"usr/bin/other": b"#!/bin/sh\n"})
    archive.publish()
    server, _thread = serve(archive)
    try:
        yield archive
    finally:
        server.shutdown()
        server.server_close()


def test_verified_chain_fetches_the_newest_package(fake: FakeArchive, tmp_path: Path) -> None:
    notes = Notes()
    archive = Archive(fake.url, keyrings=[fake.keyring], progress=notes)
    release = archive.release(SUITE)
    assert release.signed and release.codename == SUITE
    ref = archive.find_package(SUITE, "hello")
    assert ref.version == "1.2-1"
    deb = archive.fetch_deb(ref)
    assert hashlib.sha256(deb.read_bytes()).hexdigest() == ref.sha256
    assert read_file(deb, "usr/lib/test/hello.txt") == HELLO["usr/lib/test/hello.txt"]
    assert notes.notes == []  # no warnings when the signature is checked
    assert any(label == "hello.deb" and done == ref.size for label, done, _ in notes.transfers)
    # Packages came by hash (Acquire-By-Hash), as apt does.
    assert any("/by-hash/SHA256/" in r for r in fake.requests)


def test_debs_are_cached_by_hash(fake: FakeArchive) -> None:
    archive = Archive(fake.url, keyrings=[fake.keyring])
    ref = archive.find_package(SUITE, "other")
    first = archive.fetch_deb(ref)
    fake.requests.clear()
    again = Archive(fake.url, keyrings=[fake.keyring]).fetch_deb(ref)
    assert again == first and first.name == f"{ref.sha256}.deb"
    assert not any(r.endswith(".deb") for r in fake.requests)


def test_lookups_are_remembered_per_index_hash(fake: FakeArchive) -> None:
    first = Archive(fake.url, keyrings=[fake.keyring]).find_package(SUITE, "hello")
    fake.requests.clear()
    again = Archive(fake.url, keyrings=[fake.keyring]).find_package(SUITE, "hello")
    assert again == first
    assert not any("Packages" in r or "by-hash" in r for r in fake.requests)  # index and answer both cached
    cache = Path(__import__("os").environ["IMGBUILD_CACHE"]) / "debian-index"
    assert len(list(cache.glob("sha256-*.lookup.json"))) == 1


def test_tampered_deb_is_rejected(fake: FakeArchive) -> None:
    archive = Archive(fake.url, keyrings=[fake.keyring])
    ref = archive.find_package(SUITE, "other")
    deb = fake.path(ref.filename)
    deb.write_bytes(deb.read_bytes()[:-1] + b"\0")
    with pytest.raises(ArchiveError, match="does not match the archive's signed index"):
        archive.fetch_deb(ref)
    cache = Path(__import__("os").environ["IMGBUILD_CACHE"]) / "debs"
    assert not list(cache.glob("*.deb")) and not list(cache.glob("*.part"))


def test_tampered_packages_is_rejected(fake: FakeArchive) -> None:
    for path in fake.root.glob("dists/*/main/binary-amd64/**/*"):
        if path.is_file() and (path.name.endswith(".xz") or len(path.name) == 64):
            data = lzma.decompress(path.read_bytes()) if path.name.endswith(".xz") else None
            if data is not None:
                path.write_bytes(lzma.compress(data.replace(b"Version: 1.2-1", b"Version: 9.9-9")))
    for path in fake.root.glob("dists/*/main/binary-amd64/by-hash/SHA256/*"):
        path.unlink()
    with pytest.raises(ArchiveError, match="does not match the archive's signed index"):
        Archive(fake.url, keyrings=[fake.keyring]).find_package(SUITE, "hello")


def test_tampered_inrelease_is_rejected(fake: FakeArchive) -> None:
    inrelease = fake.path(f"dists/{SUITE}/InRelease")
    inrelease.write_bytes(inrelease.read_bytes().replace(b"Origin: Test", b"Origin: Evil"))
    with pytest.raises(SignatureError, match="bad signature"):
        Archive(fake.url, keyrings=[fake.keyring]).release(SUITE)


def test_unknown_signing_key_is_rejected(fake: FakeArchive, signing: tuple[Path, Path, Path]) -> None:
    _, _, other_keyring = signing
    with pytest.raises(SignatureError, match="unknown keys"):
        Archive(fake.url, keyrings=[other_keyring]).release(SUITE)


def test_detached_signature_when_there_is_no_inrelease(fake: FakeArchive) -> None:
    fake.publish(inrelease=False, detached=True)
    archive = Archive(fake.url, keyrings=[fake.keyring])
    assert archive.release(SUITE).signed
    assert archive.find_package(SUITE, "hello").version == "1.2-1"
    release = fake.path(f"dists/{SUITE}/Release")
    release.write_bytes(release.read_bytes().replace(b"Label: Test", b"Label: Evil"))
    with pytest.raises(SignatureError):
        Archive(fake.url, keyrings=[fake.keyring]).release(SUITE)


def test_without_keyring_warns_but_still_checks_hashes(fake: FakeArchive) -> None:
    notes = Notes()
    archive = Archive(fake.url, keyrings=[], progress=notes)
    release = archive.release(SUITE)
    assert not release.signed
    assert len(notes.notes) == 1 and "WARNING: cannot check the signature" in notes.notes[0]
    ref = archive.find_package(SUITE, "other")
    deb = fake.path(ref.filename)
    deb.write_bytes(deb.read_bytes() + b"x")
    with pytest.raises(ArchiveError, match="does not match"):
        archive.fetch_deb(ref)


def test_wrong_suite_and_missing_things(fake: FakeArchive) -> None:
    fake.publish(codename="othersuite")
    (fake.root / "dists/othersuite/Release").rename(fake.root / "dists/othersuite/Release.keep")
    # serve othersuite's signed InRelease under the name the client asks for
    (fake.root / f"dists/{SUITE}/InRelease").write_bytes((fake.root / "dists/othersuite/InRelease").read_bytes())
    with pytest.raises(ImgbuildError, match="describes codename 'othersuite'"):
        Archive(fake.url, keyrings=[fake.keyring]).release(SUITE)
    with pytest.raises(NotFound):
        Archive(fake.url, keyrings=[fake.keyring]).release("nosuchsuite")
    archive = Archive(fake.url, keyrings=[fake.keyring])
    with pytest.raises(NotFound, match="no-such-package"):
        archive.find_package("othersuite", "no-such-package")


def test_unreachable_mirror_is_one_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    with pytest.raises(ArchiveError, match=r"cannot reach the Debian mirror: http://\*\*\*@127.0.0.1:9/"):
        Archive("http://user:secret@127.0.0.1:9", keyrings=[]).release("trixie")
    with pytest.raises(ArchiveError) as info:
        Archive("http://user:secret@127.0.0.1:9", keyrings=[]).release("trixie")
    assert "secret" not in str(info.value)


@pytest.mark.parametrize("compression", ["xz", "gzip", "none"])
def test_deb_reader_against_dpkg_deb(tmp_path: Path, compression: str) -> None:
    need_tool("dpkg-deb", "dpkg")
    deb = build_deb(tmp_path, "pkg", "1.0", {"usr/lib/a/one": b"1" * 100_000, "usr/lib/a/two": b"2"}, compression)
    assert sorted(list_files(deb)) == ["usr/lib/a/one", "usr/lib/a/two"]
    written = extract_paths(deb, ["usr/lib/a/one"], tmp_path / "out")
    assert written["usr/lib/a/one"].read_bytes() == b"1" * 100_000
    with pytest.raises(DebError, match="missing"):
        extract_paths(deb, ["usr/lib/a/three"], tmp_path / "out")


def test_zstd_deb_needs_the_zstandard_module(tmp_path: Path) -> None:
    need_tool("dpkg-deb", "dpkg")
    deb = build_deb(tmp_path, "pkg", "1.0", {"usr/lib/a/one": b"1"}, "zstd")
    try:
        import zstandard  # noqa: F401 (only whether it imports matters)
    except ImportError:
        with pytest.raises(DebError, match="zstandard"):
            list_files(deb)
    else:
        assert list_files(deb) == ["usr/lib/a/one"]


def test_not_a_deb(tmp_path: Path) -> None:
    bogus = tmp_path / "x.deb"
    bogus.write_bytes(b"PK\3\4 not an ar archive")
    with pytest.raises(DebError, match="not a Debian package"):
        list_files(bogus)


@pytest.mark.parametrize(
    "a, b, sign",
    [
        ("1.0", "1.0", 0),
        ("1.0-1", "1.0-2", -1),
        ("1:0.1", "2.0", 1),
        ("1.0~rc1", "1.0", -1),
        ("20250803+deb13u8", "20250803+deb13u10", -1),
        ("3:6.04~git20190206.bf6db5b4+dfsg1-3.1", "3:6.04~git20190206.bf6db5b4+dfsg1-3", 1),
        ("1.0a", "1.0", 1),
        ("1.0+b1", "1.0", 1),
    ],
)
def test_version_order(a: str, b: str, sign: int) -> None:
    result = compare_versions(a, b)
    assert (result > 0) - (result < 0) == sign
    back = compare_versions(b, a)
    assert (back > 0) - (back < 0) == -sign


def test_deb822_continuations() -> None:
    text = "Package: a\nDescription: short\n long line\n .\n more\n\nPackage: b\nVersion: 1\n"
    stanzas = list(iter_stanzas(text.splitlines()))
    assert stanzas[0]["Description"] == "short\nlong line\n.\nmore"
    assert stanzas[1] == {"Package": "b", "Version": "1"}


def test_host_keyring_is_found() -> None:
    keyrings = default_keyrings()
    assert keyrings, "debian-archive-keyring is not installed: apt-get install debian-archive-keyring"
    assert all("removed" not in k.name for k in keyrings)
