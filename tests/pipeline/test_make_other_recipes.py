"""The other shipped scenarios on the local target: DHCP and the NAT'd LXDE desktop."""

from __future__ import annotations

import pytest

from builder.verify.pngcheck import inspect_png
from tests.pipeline.conftest import check_named

pytestmark = pytest.mark.boot


def test_ssh_server_over_dhcp(imgbuild) -> None:
    result = imgbuild("make", "ssh-server")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("ssh-server")
    assert report["ok"] and report["vm"]["address"] == "10.0.2.15"  # slirp's first DHCP lease
    ssh = check_named(report, "ssh")
    assert ssh["ok"] and "10.0.2.15/24" in ssh["seen"]
    assert check_named(report, "service ssh")["ok"]
    assert report["vm"]["state"] == "shut down"


def test_lxde_desktop_with_screenshot(imgbuild) -> None:
    result = imgbuild("make", "lxde-desktop")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("lxde-desktop")
    assert report["ok"] and report["vm"]["address"] == "10.10.10.20"
    assert check_named(report, "service lightdm")["ok"]
    desktop = check_named(report, "desktop")
    assert desktop["ok"]
    info = inspect_png((imgbuild.out / "lxde-desktop" / "screenshot.png").read_bytes())
    assert not info.blank and info.width >= 640 and info.height >= 480
