"""Fixtures for the ISO tests: the real netboot installer (verified, cached), the rendered web-server
recipe (via the imgbuild CLI), and helpers to read ISOs with independent tools."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.debian import Archive
from builder.iso.netboot import NetbootFiles, fetch_netboot

REPO = Path(__file__).resolve().parents[2]
RECIPE = "web-server"


def need_tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if not path:
        pytest.fail(f"{name} is required for this test: apt-get install {package}")
    return path


def isoinfo(*args: str) -> str:
    need_tool("isoinfo", "genisoimage")
    return subprocess.run(["isoinfo", *args], check=True, capture_output=True).stdout.decode("utf-8", "replace")


def isoinfo_bytes(iso: Path, path: str, mode: str = "-R") -> bytes:
    need_tool("isoinfo", "genisoimage")
    return subprocess.run(["isoinfo", mode, "-i", str(iso), "-x", path], check=True, capture_output=True).stdout


def xorriso_report(iso: Path) -> str:
    need_tool("xorriso", "xorriso")
    proc = subprocess.run(
        ["xorriso", "-indev", str(iso), "-report_el_torito", "plain", "-report_system_area", "plain"],
        check=True,
        capture_output=True,
    )
    return (proc.stdout + proc.stderr).decode("utf-8", "replace")


@pytest.fixture(scope="session")
def archive() -> Archive:
    return Archive()


@pytest.fixture(scope="session")
def netboot(archive: Archive) -> NetbootFiles:
    """The trixie netboot installer and isolinux, fetched through the verified chain (cached)."""
    return fetch_netboot("trixie", archive)


@pytest.fixture(scope="session")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The web-server recipe rendered by the real CLI: DIR/web-server/{preseed.cfg,user-data,...}."""
    out = tmp_path_factory.mktemp("render")
    imgbuild = Path(sys.executable).with_name("imgbuild")
    cmd = [str(imgbuild)] if imgbuild.exists() else [sys.executable, "-m", "builder"]
    proc = subprocess.run(
        [*cmd, "--recipes-dir", str(REPO / "recipes"), "--out-dir", str(out), "render", RECIPE],
        capture_output=True,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr.decode()
    return out / RECIPE


@dataclass(frozen=True)
class RecipeNetwork:
    address: str  # with prefix
    gateway: str
    nameserver: str
    hostname: str
    mirror_host: str


def _preseed_value(text: str, key: str) -> str:
    match = re.search(rf"^d-i {re.escape(key)} \S+ (.*)$", text, re.M)
    assert match, f"{key} not in the rendered preseed"
    return match.group(1).strip()


@pytest.fixture(scope="session")
def recipe_network(rendered: Path) -> RecipeNetwork:
    """What the rendered preseed asks the installer to configure (read from the artifact itself)."""
    import ipaddress

    text = (rendered / "preseed.cfg").read_text()
    ip = _preseed_value(text, "netcfg/get_ipaddress")
    mask = _preseed_value(text, "netcfg/get_netmask")
    prefix = ipaddress.ip_network(f"0.0.0.0/{mask}").prefixlen
    return RecipeNetwork(
        address=f"{ip}/{prefix}",
        gateway=_preseed_value(text, "netcfg/get_gateway"),
        nameserver=_preseed_value(text, "netcfg/get_nameservers").split()[0],
        hostname=_preseed_value(text, "netcfg/get_hostname"),
        mirror_host=_preseed_value(text, "mirror/http/hostname"),
    )


def _debian_like(tmp_path_factory: pytest.TempPathFactory, netboot: NetbootFiles, archive: Archive, pad: int) -> Path:
    from tests.iso.debian_like import build_debian_like_iso

    need_tool("xorriso", "xorriso")
    need_tool("grub-mkimage", "grub-common grub-efi-amd64-bin")
    work = tmp_path_factory.mktemp("debian-like")
    return build_debian_like_iso(work / "debian-13-amd64-netinst.iso", netboot, archive, pad_bytes=pad, work=work)


@pytest.fixture(scope="session")
def debian_like_small(tmp_path_factory: pytest.TempPathFactory, netboot: NetbootFiles, archive: Archive) -> Path:
    """An ISO laid out like Debian's netinst (no padding): quick remaster checks."""
    return _debian_like(tmp_path_factory, netboot, archive, 0)


BIG_PAD = 600 * 1024 * 1024


@pytest.fixture(scope="session")
def debian_like_big(tmp_path_factory: pytest.TempPathFactory, netboot: NetbootFiles, archive: Archive) -> Path:
    """The same layout padded past 600 MB: memory bound and boot of the remaster."""
    iso = _debian_like(tmp_path_factory, netboot, archive, BIG_PAD)
    assert iso.stat().st_size >= 600 * 1000 * 1000
    return iso
