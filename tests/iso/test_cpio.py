"""The newc cpio writer, read back by GNU cpio and by a kernel-style reader of concatenated archives."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from builder.iso import cpio
from tests.iso.conftest import need_tool


def read_newc_stream(data: bytes) -> list[tuple[str, int, bytes]]:
    """Like the kernel's initramfs unpacker: every archive in turn, zero padding skipped.
    Returns (name, mode, data) for every member except trailers."""
    out = []
    pos = 0
    while pos < len(data):
        if data[pos] == 0:
            pos += 1
            continue
        assert data[pos : pos + 6] == b"070701", f"bad magic at {pos}"
        fields = [int(data[pos + 6 + 8 * i : pos + 14 + 8 * i], 16) for i in range(13)]
        mode, filesize, namesize = fields[1], fields[6], fields[11]
        name_start = pos + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize
        body += -body % 4
        content = data[body : body + filesize]
        pos = body + filesize
        pos += -pos % 4
        if name != cpio.TRAILER:
            out.append((name, mode, content))
    return out


def test_gnu_cpio_reads_it_back(tmp_path: Path) -> None:
    need_tool("cpio", "cpio")
    entries = [
        cpio.directory("etc"),
        cpio.file("etc/hello.txt", b"hello\n"),
        cpio.file("preseed.cfg", b"d-i debian-installer/locale string en_US\n" * 37, 0o600),
        cpio.file("empty", b""),
    ]
    archive = tmp_path / "a.cpio"
    archive.write_bytes(cpio.newc(entries))
    listing = subprocess.run(["cpio", "-itv", "-F", str(archive)], check=True, capture_output=True).stdout.decode()
    assert [line.split()[-1] for line in listing.splitlines()] == ["etc", "etc/hello.txt", "preseed.cfg", "empty"]
    for line in listing.splitlines():
        assert line.split()[2:4] == ["root", "root"], line
    dest = tmp_path / "x"
    dest.mkdir()
    subprocess.run(["cpio", "-idm", "--no-absolute-filenames", "-F", str(archive)], cwd=dest, check=True, capture_output=True)
    assert (dest / "etc/hello.txt").read_bytes() == b"hello\n"
    assert (dest / "preseed.cfg").read_bytes() == entries[2].data
    assert (dest / "preseed.cfg").stat().st_mode & 0o777 == 0o600
    assert (dest / "preseed.cfg").stat().st_mtime == 0
    assert (dest / "empty").read_bytes() == b""


def test_preseed_archive_is_deterministic_gzip() -> None:
    a = cpio.preseed_archive(b"d-i x string y\n")
    assert a == cpio.preseed_archive(b"d-i x string y\n")
    assert a[:2] == b"\x1f\x8b"
    assert a[4:8] == b"\0\0\0\0"  # gzip mtime 0
    members = read_newc_stream(gzip.decompress(a))
    assert members == [("preseed.cfg", 0o100644, b"d-i x string y\n")]


def test_appended_to_an_initrd_both_archives_are_read() -> None:
    base = gzip.compress(cpio.newc([cpio.directory("bin"), cpio.file("bin/sh", b"\x7fELF" + b"x" * 5001)]), mtime=0)
    combined = base + cpio.preseed_archive(b"d-i netcfg/get_hostname string web\n")
    names = [name for name, _, _ in read_newc_stream(gzip.decompress(combined))]
    assert names == ["bin", "bin/sh", "preseed.cfg"]


@pytest.mark.parametrize("name", ["", "/", "../etc/passwd", "a/../../b"])
def test_unsafe_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError):
        cpio.newc([cpio.file(name, b"x")])


def test_gnu_cpio_agrees_on_bytes(tmp_path: Path) -> None:
    """GNU cpio -H newc and we write the same members (name, mode, content) with the same layout."""
    need_tool("cpio", "cpio")
    src = tmp_path / "src"
    src.mkdir()
    (src / "preseed.cfg").write_bytes(b"abc\n")
    ours = cpio.newc([cpio.file("preseed.cfg", b"abc\n")])
    theirs = subprocess.run(
        ["cpio", "-o", "-H", "newc", "-R", "0:0", "--reproducible"], input=b"preseed.cfg\n", cwd=src, capture_output=True, check=True  # noqa: E501
    ).stdout
    assert read_newc_stream(ours) == read_newc_stream(theirs)
    assert len(ours) % 4 == 0
