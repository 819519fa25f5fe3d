"""The installer ISO built from the real trixie netboot installer: layout, boot records, menus, the
preseed inside the initrd, determinism, and the per-recipe ISO set. (Booting it: test_boot.py.)"""

from __future__ import annotations

import gzip
import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from builder.errors import InvalidInput
from builder.iso.installer import build_installer_iso, build_recipe_isos
from builder.iso.netboot import NetbootFiles, release_number
from tests.iso.conftest import REPO, isoinfo, isoinfo_bytes, need_tool, xorriso_report
from tests.iso.test_cpio import read_newc_stream

PRESEED = b"d-i debian-installer/locale string en_US.UTF-8\nd-i netcfg/get_hostname string test\n"
ARGS = ("log_host=10.0.2.2", "log_port=5140", "DEBCONF_DEBUG=5")


@pytest.fixture(scope="module")
def installer(netboot: NetbootFiles, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("installer") / "installer.iso"
    info = build_installer_iso(PRESEED, dest, release="trixie", kernel_args=ARGS, netboot=netboot)
    assert info.path == dest and info.size == dest.stat().st_size
    assert info.sha256 == hashlib.sha256(dest.read_bytes()).hexdigest()
    return dest


def test_netboot_came_through_the_verified_chain(netboot: NetbootFiles) -> None:
    ref = netboot.netboot
    assert ref.name == "debian-installer-13-netboot-amd64"
    assert ref.filename.startswith("pool/main/d/debian-installer-netboot-images/")
    for short, path in netboot.files.items():
        assert hashlib.sha256(path.read_bytes()).hexdigest() == netboot.sha256[short]
    assert b"13 (trixie)" in netboot.path("version.info").read_bytes()


def test_el_torito_bios_and_uefi(installer: Path) -> None:
    report = xorriso_report(installer)
    bios = [line for line in report.splitlines() if line.startswith("El Torito boot img") and " BIOS " in line]
    uefi = [line for line in report.splitlines() if line.startswith("El Torito boot img") and " UEFI " in line]
    assert len(bios) == 1 and len(uefi) == 1, report
    assert "/isolinux/isolinux.bin" in report and "/boot/grub/efi.img" in report
    assert "boot-info-table" in report
    assert bios[0].split()[-2] == "4"  # load size: 4 sectors, as isolinux wants


def test_efi_image_holds_shim_and_grub(installer: Path, netboot: NetbootFiles, tmp_path: Path) -> None:
    need_tool("mcopy", "mtools")
    need_tool("fsck.fat", "dosfstools")
    image = tmp_path / "efi.img"
    image.write_bytes(isoinfo_bytes(installer, "/boot/grub/efi.img"))
    fsck = subprocess.run(["fsck.fat", "-n", str(image)], capture_output=True)
    assert fsck.returncode == 0, fsck.stdout
    for inside, short in (("EFI/BOOT/BOOTX64.EFI", "bootnetx64.efi"), ("EFI/BOOT/GRUBX64.EFI", "grubx64.efi")):
        out = tmp_path / short
        subprocess.run(["mcopy", "-n", "-i", str(image), f"::{inside}", str(out)], check=True, capture_output=True)
        assert out.read_bytes() == netboot.path(short).read_bytes()


def test_layout_and_names(installer: Path) -> None:
    info = isoinfo("-d", "-i", str(installer))
    assert "Volume id: IMGBUILD_TRIXIE" in info
    listing = isoinfo("-R", "-f", "-i", str(installer)).split()
    for path in (
        "/install.amd/vmlinuz",
        "/install.amd/initrd.gz",
        "/isolinux/isolinux.bin",
        "/isolinux/ldlinux.c32",
        "/isolinux/isolinux.cfg",
        "/debian-installer/amd64/grub/grub.cfg",
        "/boot/grub/efi.img",
    ):
        assert path in listing, path


def test_menus_default_to_the_automated_install(installer: Path) -> None:
    isolinux = isoinfo_bytes(installer, "/isolinux/isolinux.cfg").decode()
    grub = isoinfo_bytes(installer, "/debian-installer/amd64/grub/grub.cfg").decode()
    assert "default entry0" in isolinux and "timeout 30" in isolinux and "serial 0 115200" in isolinux
    assert "set default=0" in grub and "set timeout=3" in grub and "terminal_output console serial" in grub
    for cfg in (isolinux, grub):
        for arg in ("priority=critical", *ARGS, "console=tty0", "console=ttyS0,115200n8"):
            assert arg in cfg
        assert "auto=true" not in cfg
        # installer-only arguments before ---, consoles after (copied to the installed system)
        auto = next(l for l in cfg.splitlines() if "priority=critical" in l)
        before, _, after = auto.partition(" --- ")
        assert "log_port=5140" in before and "console=ttyS0,115200n8" in after


def test_initrd_carries_the_preseed(installer: Path, netboot: NetbootFiles) -> None:
    initrd = isoinfo_bytes(installer, "/install.amd/initrd.gz")
    original = netboot.path("initrd.gz").read_bytes()
    assert initrd.startswith(original)  # the Debian initrd, untouched, then our archive
    appended = read_newc_stream(gzip.decompress(initrd[len(original) :]))
    assert appended == [("preseed.cfg", 0o100644, PRESEED)]
    kernel = isoinfo_bytes(installer, "/install.amd/vmlinuz")
    assert kernel == netboot.path("linux").read_bytes()


def test_same_inputs_same_bytes(installer: Path, netboot: NetbootFiles, tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from builder.debian import Archive\nfrom builder.iso.netboot import fetch_netboot\n"
        "from builder.iso.installer import build_installer_iso\n"
        "nb = fetch_netboot('trixie', Archive())\n"
        "build_installer_iso(sys.argv[2].encode().decode('unicode_escape').encode(), Path(sys.argv[1]), release='trixie',"
        " kernel_args=sys.argv[3:], netboot=nb)\n"
    )
    again = tmp_path / "again.iso"
    env = dict(os.environ, TZ="Pacific/Auckland")
    env.pop("SOURCE_DATE_EPOCH", None)
    subprocess.run(
        [sys.executable, "-c", code, str(again), PRESEED.decode().encode("unicode_escape").decode(), *ARGS],
        check=True, env=env, cwd=REPO,
    )
    assert again.read_bytes() == installer.read_bytes()
    changed = build_installer_iso(PRESEED + b"#\n", tmp_path / "changed.iso", release="trixie", kernel_args=ARGS, netboot=netboot)
    assert changed.path.read_bytes() != installer.read_bytes()


@pytest.mark.parametrize("bad", ["a b", "x=$(reboot)", "quote='", "---", "semi;colon", "new\nline"])
def test_unsafe_kernel_args_are_refused(bad: str, netboot: NetbootFiles, tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        build_installer_iso(PRESEED, tmp_path / "x.iso", release="trixie", kernel_args=[bad], netboot=netboot)
    assert not list(tmp_path.iterdir())


def test_unknown_release() -> None:
    with pytest.raises(InvalidInput, match="bookworm"):
        release_number("buster")


def test_recipe_isos(rendered: Path, netboot: NetbootFiles, tmp_path: Path) -> None:
    work = tmp_path / "web-server"
    work.mkdir()
    for name in ("preseed.cfg", "user-data", "meta-data", "network-config"):
        (work / name).write_bytes((rendered / name).read_bytes())
    result = build_recipe_isos(work, release="trixie", kernel_args=ARGS, netboot=netboot)
    assert result.seed == work / "seed.iso" and result.installer == work / "installer.iso"
    sums = (work / "SHA256SUMS").read_text().splitlines()
    assert sorted(sums) == sorted(
        f"{hashlib.sha256((work / n).read_bytes()).hexdigest()}  {n}" for n in ("seed.iso", "installer.iso")
    )
    assert not [p for p in work.iterdir() if p.name.endswith(".part")]
    assert "Volume id: CIDATA" in isoinfo("-d", "-i", str(result.seed))
    appended = isoinfo_bytes(result.installer, "/install.amd/initrd.gz")[netboot.path("initrd.gz").stat().st_size :]
    assert read_newc_stream(gzip.decompress(appended))[0][2] == (rendered / "preseed.cfg").read_bytes()
    again = build_recipe_isos(work, release="trixie", kernel_args=ARGS, netboot=netboot)
    assert again.sha256 == result.sha256


def test_release_numbers_cover_bookworm() -> None:
    assert release_number("bookworm") == "12" and release_number("trixie") == "13"
