"""The installer method on the local target, as far as this machine's mirror allows.

The preseeded installer boots from installer.iso on a blank virtio disk, configures the recipe's static
address and hostname without asking anything, and contacts the mirror. The mirror here serves no .udeb
files (and its Release no longer matches its signature), so the installer cannot fetch its own components:
make must stop there at once with the installer's own error, not at a deadline.

Set IMGBUILD_FULL_INSTALL=1 on a machine with a complete mirror to run the install to power-off, boot
from the disk and verify (test_full_install).
"""

from __future__ import annotations

import re

import pytest

from tests.pipeline.conftest import qemu_processes

pytestmark = pytest.mark.boot


@pytest.mark.optin("IMGBUILD_FULL_INSTALL", "test_full_install runs the complete install instead", when="unset")
def test_installer_runs_unattended_until_the_mirror_stops_it(imgbuild) -> None:
    result = imgbuild("make", "web-server", "--method", "installer", timeout=2400)
    assert result.returncode == 1, result.stderr[-3000:]
    assert "Traceback" not in result.stderr
    report = imgbuild.report("web-server")
    install = [s for s in report["stages"] if s["name"] == "install"]
    assert install and install[0]["ok"] is False
    assert [s["name"] for s in report["stages"] if s["ok"]] == ["check", "render", "build", "stage", "create"]
    # Stopped by the first question, which comes from the archive step, not from anything we preseed.
    match = re.search(r"the installer stopped at a question during ([a-z ]+): the installer asks (\S+)", result.stderr)
    assert match, result.stderr[-2000:]
    stage, question = match.groups()
    assert stage in ("mirror", "retrieving installer components"), stage
    assert question.startswith(("retriever/", "mirror/", "anna/")), question
    log = (imgbuild.out / "web-server" / "installer-syslog.log").read_text()
    # Before that: the static network and host name from the recipe, applied with no prompt.
    assert "netcfg" in log and "192.168.1.250" in log
    assert "ip route add default via 192.168.1.1" in log
    assert re.search(r"web-server\b", log)
    assert "Menu item 'choose-mirror' selected" in log
    assert re.search(r"URL:http://deb\.debian\.org/debian/dists/\S+/Release \[\d+", log), "no Release fetched"
    assert report["vm"]["state"] == "destroyed after failure"
    assert qemu_processes(imgbuild.out) == []
    for name in ("installer.iso", "seed.iso"):
        assert any(a["name"] == name and len(a["sha256"]) == 64 for a in report["artifacts"])


@pytest.mark.optin("IMGBUILD_FULL_INSTALL", "needs a Debian mirror that serves .udeb files")
def test_full_install(imgbuild) -> None:
    result = imgbuild("make", "web-server", "--method", "installer", timeout=3 * 3600)
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("web-server")
    assert report["ok"] and [s["name"] for s in report["stages"]][-3:] == ["install", "boot", "verify"]
