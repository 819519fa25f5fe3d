"""The NoCloud seed ISO, read back with isoinfo (genisoimage) and pycdlib, and built twice."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pycdlib
import pytest

from builder.errors import ImgbuildError
from builder.iso.seed import build_seed_iso, content_epoch
from tests.iso.conftest import REPO, isoinfo, isoinfo_bytes

FILES = {
    "user-data": b"#cloud-config\nhostname: web-server\n",
    "meta-data": b"instance-id: web-server-1\nlocal-hostname: web-server\n",
    "network-config": b"version: 2\nethernets: {}\n",
    "vendor-data": b"#cloud-config\n{}\n",
}


@pytest.fixture
def seed(tmp_path: Path) -> Path:
    return build_seed_iso(FILES, tmp_path / "seed.iso", epoch=1_700_000_000)


def test_volume_id_is_cidata(seed: Path) -> None:
    info = isoinfo("-d", "-i", str(seed))
    assert "Volume id: CIDATA" in info
    assert "Joliet" in info and "Rock Ridge" in info


@pytest.mark.parametrize("mode", ["-J", "-R"])
def test_exact_names_and_content(seed: Path, mode: str) -> None:
    listing = isoinfo(mode, "-l", "-i", str(seed))
    names = sorted(line.split()[-1] for line in listing.splitlines() if line.startswith("-"))
    assert names == sorted(FILES)
    for name, data in FILES.items():
        assert isoinfo_bytes(seed, f"/{name}", mode) == data


def test_pycdlib_reopens_it(seed: Path) -> None:
    iso = pycdlib.PyCdlib()
    iso.open(str(seed))
    try:
        for name, data in FILES.items():
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, rr_path=f"/{name}")
            assert buf.getvalue() == data
            buf = io.BytesIO()
            iso.get_file_from_iso_fp(buf, joliet_path=f"/{name}")
            assert buf.getvalue() == data
    finally:
        iso.close()


def _build_in_subprocess(dest: Path, tz: str) -> bytes:
    code = (
        "import sys, json\n"
        "from pathlib import Path\n"
        "from builder.iso.seed import build_seed_iso\n"
        "files = {k: v.encode() for k, v in json.loads(sys.argv[2]).items()}\n"
        "build_seed_iso(files, Path(sys.argv[1]), epoch=1700000000)\n"
    )
    import json

    env = dict(os.environ, TZ=tz)
    subprocess.run(
        [sys.executable, "-c", code, str(dest), json.dumps({k: v.decode() for k, v in FILES.items()})],
        check=True,
        env=env,
        cwd=REPO,
    )
    return dest.read_bytes()


def test_same_bytes_every_time_and_timezone(tmp_path: Path, seed: Path) -> None:
    """Built twice (a second apart, in two time zones) the bytes are identical: every pycdlib date is pinned."""
    first = seed.read_bytes()
    assert _build_in_subprocess(tmp_path / "tokyo.iso", "Asia/Tokyo") == first
    assert _build_in_subprocess(tmp_path / "ny.iso", "America/New_York") == first
    other = build_seed_iso(FILES, tmp_path / "other.iso", epoch=1_700_000_001)
    assert other.read_bytes() != first  # the epoch really is what is written


def test_dates_are_the_epoch(seed: Path) -> None:
    """Volume creation, modification and effective dates are the epoch in UTC (1700000000 = 2023-11-14
    22:13:20); expiration is unset. Read straight from the primary volume descriptor."""
    pvd = seed.read_bytes()[16 * 2048 : 17 * 2048]
    assert pvd[1:6] == b"CD001"
    dates = {name: pvd[off : off + 17] for name, off in (("created", 813), ("modified", 830), ("expires", 847), ("effective", 864))}  # noqa: E501
    for name in ("created", "modified", "effective"):
        assert dates[name] == b"2023111422132000\x00", (name, dates[name])
    assert dates["expires"][:16] in (b"0" * 16, b"\x00" * 16)
    assert "Nov 14 2023" in isoinfo("-R", "-l", "-i", str(seed))


def test_content_epoch(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SOURCE_DATE_EPOCH", raising=False)
    a = content_epoch(FILES)
    assert a == content_epoch(dict(FILES))
    assert a != content_epoch({**FILES, "user-data": b"#cloud-config\n"})
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1234567890")
    assert content_epoch(FILES) == 1234567890


def test_rendered_recipe_seed(rendered: Path, tmp_path: Path) -> None:
    files = {n: (rendered / n).read_bytes() for n in ("user-data", "meta-data", "network-config")}
    a = build_seed_iso(files, tmp_path / "a.iso", epoch=content_epoch(files))
    b = build_seed_iso(files, tmp_path / "b.iso", epoch=content_epoch(files))
    assert a.read_bytes() == b.read_bytes()
    for name, data in files.items():
        assert isoinfo_bytes(a, f"/{name}", "-J") == data


def test_missing_or_unknown_files_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ImgbuildError, match="meta-data"):
        build_seed_iso({"user-data": b"x"}, tmp_path / "x.iso", epoch=1_700_000_000)
    with pytest.raises(ImgbuildError, match="not a NoCloud"):
        build_seed_iso({**FILES, "evil": b"x"}, tmp_path / "x.iso", epoch=1_700_000_000)
    assert not (tmp_path / "x.iso").exists()
