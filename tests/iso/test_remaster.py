"""Remastering an ISO laid out like Debian's netinst: what changes, what stays, memory bound.
(Booting the remaster: test_boot.py.)"""

from __future__ import annotations

import gzip
import hashlib
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import ImgbuildError, InvalidInput
from builder.iso.remaster import remaster_iso, update_md5sums
from tests.iso.conftest import REPO, isoinfo, isoinfo_bytes, xorriso_report
from tests.iso.debian_like import GRUB_CFG, ISOLINUX_CFG
from tests.iso.test_cpio import read_newc_stream

PRESEED = b"d-i netcfg/get_hostname string remastered\n"
ARGS = ("log_host=10.0.2.2", "log_port=5140")
MEMORY_LIMIT = 200 * 1024 * 1024


@pytest.fixture(scope="module")
def remastered(debian_like_small: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("remaster") / "installer.iso"
    info = remaster_iso(debian_like_small, PRESEED, dest, kernel_args=ARGS)
    assert info.source == "remaster:debian-13-amd64-netinst.iso"
    assert info.release == "trixie"  # from .disk/info
    return dest


def _boot_report(report: str) -> dict[str, str]:
    return {
        m.group(1): m.group(2)
        for m in re.finditer(r"^El Torito img path :\s+(\d+)\s+(\S+)", report, re.M)
    }


def test_boot_records_kept(remastered: Path, debian_like_small: Path) -> None:
    before, after = xorriso_report(debian_like_small), xorriso_report(remastered)
    assert _boot_report(after) == _boot_report(before) == {"1": "/isolinux/isolinux.bin", "2": "/boot/grub/efi.img"}
    assert "El Torito boot img :   1  BIOS" in after and "UEFI" in after
    # isohybrid MBR + GPT still there, and consistent (pycdlib's stale CRCs repaired)
    assert "MBR isohybrid" in after and "GPT" in after
    for bad in ("CRC wrong", "problems", "Implausible"):
        assert bad not in after, after
    assert "GPT partition path :   2  /boot/grub/efi.img" in after


def test_menus_switched_and_originals_kept(remastered: Path) -> None:
    isolinux = isoinfo_bytes(remastered, "/isolinux/isolinux.cfg").decode()
    assert "default entry0" in isolinux and "timeout 30" in isolinux and "ui vesamenu.c32" in isolinux
    assert "initrd=/install.amd/initrd.gz,/install.amd/preseed.gz priority=critical log_host=10.0.2.2" in isolinux
    assert "config /isolinux/orig.cfg" in isolinux
    assert isoinfo_bytes(remastered, "/isolinux/orig.cfg").decode() == ISOLINUX_CFG
    grub = isoinfo_bytes(remastered, "/boot/grub/grub.cfg").decode()
    assert "set timeout=3" in grub and "initrd /install.amd/initrd.gz /install.amd/preseed.gz" in grub
    assert "configfile /boot/grub/orig.cfg" in grub
    assert isoinfo_bytes(remastered, "/boot/grub/orig.cfg").decode() == GRUB_CFG
    assert "auto=true" not in isolinux + grub


def test_preseed_initrd(remastered: Path) -> None:
    archive = isoinfo_bytes(remastered, "/install.amd/preseed.gz")
    assert read_newc_stream(gzip.decompress(archive)) == [("preseed.cfg", 0o100644, PRESEED)]


def test_md5sums_match_the_files(remastered: Path, debian_like_small: Path) -> None:
    sums = isoinfo_bytes(remastered, "/md5sum.txt").decode().splitlines()
    listed = {}
    for line in sums:
        digest, name = line.split("  ", 1)
        listed[name[1:]] = digest
    for path in ("/install.amd/preseed.gz", "/isolinux/isolinux.cfg", "/isolinux/orig.cfg", "/boot/grub/grub.cfg", "/boot/grub/orig.cfg"):  # noqa: E501
        assert path in listed, path
    for path, digest in listed.items():
        assert hashlib.md5(isoinfo_bytes(remastered, path)).hexdigest() == digest, path
    # untouched files keep their lines, in the original order
    original = isoinfo_bytes(debian_like_small, "/md5sum.txt").decode().splitlines()
    kept = [line for line in original if not line.endswith(("isolinux.cfg", "/grub/grub.cfg"))]
    assert [line for line in sums if line in kept] == kept


def test_everything_else_is_unchanged(remastered: Path, debian_like_small: Path) -> None:
    for path in ("/install.amd/vmlinuz", "/install.amd/initrd.gz", "/boot/grub/efi.img", "/isolinux/txt.cfg", "/.disk/info"):
        assert isoinfo_bytes(remastered, path) == isoinfo_bytes(debian_like_small, path), path
    assert "Volume id: Debian 13 amd64 n" in isoinfo("-d", "-i", str(remastered))


def test_remaster_of_a_remaster_keeps_the_first_originals(remastered: Path, tmp_path: Path) -> None:
    twice = remaster_iso(remastered, b"d-i x string 2\n", tmp_path / "twice.iso").path
    assert isoinfo_bytes(twice, "/isolinux/orig.cfg").decode() == ISOLINUX_CFG
    assert "log_host" not in isoinfo_bytes(twice, "/isolinux/isolinux.cfg").decode()


def test_deterministic(debian_like_small: Path, remastered: Path, tmp_path: Path) -> None:
    again = remaster_iso(debian_like_small, PRESEED, tmp_path / "again.iso", kernel_args=ARGS)
    assert again.path.read_bytes() == remastered.read_bytes()


def test_refusals(tmp_path: Path, debian_like_small: Path) -> None:
    with pytest.raises(InvalidInput, match="not found"):
        remaster_iso(tmp_path / "nope.iso", PRESEED, tmp_path / "out.iso")
    with pytest.raises(InvalidInput, match="overwrite"):
        remaster_iso(debian_like_small, PRESEED, debian_like_small)
    junk = tmp_path / "junk.iso"
    junk.write_bytes(b"\0" * 100_000)
    with pytest.raises(ImgbuildError, match="not a readable ISO"):
        remaster_iso(junk, PRESEED, tmp_path / "out.iso")
    from builder.iso.seed import build_seed_iso

    seed = build_seed_iso({"user-data": b"x", "meta-data": b"y"}, tmp_path / "seed.iso", epoch=1_700_000_000)
    with pytest.raises(ImgbuildError, match="not an amd64 Debian installer ISO"):
        remaster_iso(seed, PRESEED, tmp_path / "out.iso")
    assert not (tmp_path / "out.iso").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".part")]


def test_update_md5sums_pure() -> None:
    text = "aaa  ./a\nbbb  ./b\n"
    out = update_md5sums(text, {"/b": b"new", "/c": b""})
    assert out.splitlines() == ["aaa  ./a", f"{hashlib.md5(b'new').hexdigest()}  ./b", f"{hashlib.md5(b'').hexdigest()}  ./c"]


@pytest.mark.boot
def test_memory_stays_bounded_for_a_600mb_iso(debian_like_big: Path, tmp_path: Path) -> None:
    """Remaster in a child process; its peak RSS comes from wait4's rusage, taken by a small launcher so
    pytest's own memory is not counted (see peak_rss.py)."""
    dest = tmp_path / "big-installer.iso"
    code = (
        "import sys\nfrom pathlib import Path\nfrom builder.iso.remaster import remaster_iso\n"
        "remaster_iso(Path(sys.argv[1]), b'd-i x string y\\n', Path(sys.argv[2]), kernel_args=['log_port=5140'])\n"
    )
    peak_file = tmp_path / "peak"
    launcher = Path(__file__).with_name("peak_rss.py")
    subprocess.run(
        [sys.executable, "-S", str(launcher), str(peak_file), sys.executable, "-c", code, str(debian_like_big), str(dest)],
        cwd=REPO,
        check=True,
    )
    peak = int(peak_file.read_text())
    print(f"remaster of {debian_like_big.stat().st_size / 1e6:.0f} MB: peak RSS {peak / 2**20:.1f} MiB")
    assert 0 < peak < MEMORY_LIMIT
    assert dest.stat().st_size >= debian_like_big.stat().st_size
    listing = isoinfo("-R", "-l", "-i", str(dest))
    assert re.search(r"\s629145600 .*padding\.bin", listing)


@pytest.fixture
def iso_server(tmp_path: Path, debian_like_small: Path, monkeypatch: pytest.MonkeyPatch):
    """debian_like_small and a SHA256SUMS for it, served over loopback HTTP like a cdimage directory."""
    import http.server
    import threading

    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cdimage"
    root.mkdir()
    name = "debian-13.2.0-amd64-netinst.iso"
    os_link_or_copy(debian_like_small, root / name)
    digest = hashlib.sha256((root / name).read_bytes()).hexdigest()
    (root / "SHA256SUMS").write_text(f"{'0' * 64}  debian-edu-13.2.0-amd64-netinst.iso\n{digest}  {name}\n")
    requests: list[str] = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(root), **kwargs)

        def do_GET(self):
            requests.append(self.path)
            return super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", root, name, digest, requests
    finally:
        server.shutdown()
        server.server_close()


def os_link_or_copy(src: Path, dest: Path) -> None:
    import shutil

    try:
        dest.hardlink_to(src)
    except OSError:
        shutil.copyfile(src, dest)


def test_base_iso_from_a_url_is_verified_and_cached(iso_server, tmp_path: Path) -> None:
    from builder.iso.remaster import fetch_base_iso

    url, _root, name, digest, requests = iso_server
    path = fetch_base_iso(f"{url}/{name}", f"{url}/SHA256SUMS")
    assert path.name == f"{digest}.iso" and hashlib.sha256(path.read_bytes()).hexdigest() == digest
    requests.clear()
    assert fetch_base_iso(f"{url}/{name}", f"{url}/SHA256SUMS") == path
    assert requests == ["/SHA256SUMS"]  # the ISO itself came from the cache
    info = remaster_iso(path, PRESEED, tmp_path / "out.iso")
    assert info.path.exists()


def test_base_iso_that_does_not_match_its_sums_is_refused(iso_server) -> None:
    from builder.iso.remaster import fetch_base_iso

    url, root, name, _digest, _requests = iso_server
    (root / "SHA256SUMS").write_text(f"{'1' * 64}  {name}\n")
    with pytest.raises(ImgbuildError, match="does not match"):
        fetch_base_iso(f"{url}/{name}", f"{url}/SHA256SUMS")
    cache = Path(os.environ["IMGBUILD_CACHE"]) / "base-iso"
    assert not list(cache.iterdir())
    with pytest.raises(ImgbuildError, match="lists no SHA256"):
        fetch_base_iso(f"{url}/other.iso", f"{url}/SHA256SUMS")
    with pytest.raises(ImgbuildError, match="HTTP 404"):
        fetch_base_iso(f"{url}/{name}", f"{url}/MISSING")


def test_recipe_isos_with_a_base_iso(rendered: Path, debian_like_small: Path, tmp_path: Path) -> None:
    from builder.iso.installer import build_recipe_isos

    work = tmp_path / "web-server"
    work.mkdir()
    for name in ("preseed.cfg", "user-data", "meta-data", "network-config"):
        (work / name).write_bytes((rendered / name).read_bytes())
    result = build_recipe_isos(work, release="trixie", base_iso=debian_like_small, kernel_args=ARGS)
    assert result.installer_info.source.startswith("remaster:")
    assert isoinfo_bytes(result.installer, "/isolinux/orig.cfg").decode() == ISOLINUX_CFG
    preseed = read_newc_stream(gzip.decompress(isoinfo_bytes(result.installer, "/install.amd/preseed.gz")))
    assert preseed[0][2] == (rendered / "preseed.cfg").read_bytes()
    assert (work / "SHA256SUMS").read_text().count("\n") == 2
    with pytest.raises(InvalidInput, match="SHA256SUMS"):
        build_recipe_isos(work, release="trixie", base_iso="http://127.0.0.1:9/x.iso", kernel_args=ARGS)
