"""QEMU's sockets (whoever connects to QMP controls the VM) live in a directory only this user can enter:
the VM's own directory, or a short one under $XDG_RUNTIME_DIR or the cache when paths are long; never a
predictable /tmp name, never a directory someone else made."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.targets.base import DiskSpec, NicSpec, VMSpec
from builder.targets.local import LocalTarget
from builder.targets.local.rundir import MAX_SOCKET_PATH, ensure_private, socket_dir


@pytest.fixture
def short_tmp() -> Iterator[Path]:
    """A temporary directory with a short path, as socket directories have (pytest's are long)."""
    path = Path(tempfile.mkdtemp(prefix="sd-"))
    try:
        yield path
    finally:
        shutil.rmtree(path)


@pytest.fixture
def long_out(tmp_path: Path) -> Path:
    out = tmp_path / ("x" * 40) / ("y" * 40)
    assert len(str(out / "web" / "vm" / "qmp.sock")) > MAX_SOCKET_PATH
    return out


def test_long_paths_get_a_private_directory_under_the_runtime_dir(long_out: Path, tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = Path(tempfile.mkdtemp(prefix="rt-"))  # short, as /run/user/UID is
    try:
        monkeypatch.setenv("XDG_RUNTIME_DIR", str(runtime))
        target = LocalTarget(long_out)
        vm = target.create_vm(VMSpec(name="web", disks=(DiskSpec(1 << 30),), nics=(NicSpec("52:54:00:00:00:01"),)))
        sockdir = Path(vm.state.sockdir)  # type: ignore[attr-defined]
        assert sockdir.parent == runtime / "imgbuild" and not str(sockdir).startswith("/tmp/imgbuild-")
        ensure_private(sockdir)
        for path in (sockdir, sockdir.parent):
            st = path.stat()
            assert st.st_uid == os.geteuid() and st.st_mode & 0o777 == 0o700
        target.destroy(vm)
        assert not sockdir.exists()
    finally:
        shutil.rmtree(runtime)


def test_without_a_runtime_dir_the_cache_holds_it(long_out: Path, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    assert socket_dir(long_out / "web" / "vm").parent == tmp_path / "cache" / "run"
    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)  # an XDG_RUNTIME_DIR open to others (sudo keeps another user's) is not used
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(shared))
    assert socket_dir(long_out / "web" / "vm").parent == tmp_path / "cache" / "run"


def test_a_directory_someone_else_prepared_is_refused(short_tmp: Path) -> None:
    if os.geteuid() != 0:
        pytest.fail("this test gives a directory away with chown: run it as root (as CI does)")
    base = short_tmp / "run"
    base.mkdir(mode=0o700)
    planted = base / "0123456789abcdef"
    planted.mkdir()
    os.chmod(planted, 0o777)
    os.chown(planted, 65534, 65534)
    with pytest.raises(ImgbuildError, match="belongs to uid 65534"):
        ensure_private(planted)
    link = base / "fedcba9876543210"
    link.symlink_to(short_tmp)
    with pytest.raises(ImgbuildError, match="not a directory of its own"):
        ensure_private(link)


def test_our_own_directory_left_open_is_closed(short_tmp: Path) -> None:
    base = short_tmp / "run"
    base.mkdir()
    os.chmod(base, 0o755)
    mine = base / "abc"
    mine.mkdir()
    os.chmod(mine, 0o777)
    ensure_private(mine)
    assert mine.stat().st_mode & 0o777 == 0o700 and base.stat().st_mode & 0o777 == 0o700
