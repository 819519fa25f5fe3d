"""Following the installer's remote syslog: parsing, stages, prompts, errors, and the UDP listener."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.iso.installer_log import (
    InstallerLog,
    InstallerTracker,
    parse_syslog,
    serial_shows_dialog,
)

DATA = Path(__file__).parent / "data"


def recorded() -> list[bytes]:
    lines = (DATA / "d-i-trixie-syslog.txt").read_text().splitlines()
    return [line.encode() + b"\n" for line in lines if not line.startswith("#")]


class Notes:
    def __init__(self) -> None:
        self.steps: list[str] = []
        self.notes: list[str] = []

    def step(self, text: str) -> None:
        self.steps.append(text)

    def note(self, text: str) -> None:
        self.notes.append(text)

    def transfer(self, label: str, done: int, total: int | None) -> None:
        pass


def test_parse_busybox_format() -> None:
    msg = parse_syslog(b"<14>Nov 28 03:49:17 netcfg[3853]: INFO: Found link on ens3\n")
    assert msg is not None
    assert (msg.pri, msg.severity, msg.tag, msg.pid, msg.text) == (14, 6, "netcfg", 3853, "INFO: Found link on ens3")
    msg = parse_syslog(b"<13>Nov 28 03:49:18 anna-install: Queueing udeb apt-mirror-setup\n")
    assert msg is not None and msg.tag == "anna-install" and msg.pid is None
    assert parse_syslog(b"garbage") is None


def test_recorded_install_stages_fetches_errors_and_the_prompt() -> None:
    """A real trixie netboot run: network, mirror, component retrieval; the mirror's broken signature is an
    error and the retriever's error dialog is a prompt."""
    notes = Notes()
    log = InstallerLog(progress=notes)
    for datagram in recorded():
        log.feed(datagram)
    assert log.stages() == ["network", "mirror", "retrieving installer components"]
    assert notes.steps == [f"installer: {s}" for s in log.stages()]
    fetched = [e.url for e in log.events("fetched")]
    assert "http://deb.debian.org/debian/dists/trixie/Release" in fetched
    assert any("Bad signature" in e.text for e in log.errors())
    prompts = log.prompts()
    assert [p.question for p in prompts] == ["retriever/net/error"]
    assert prompts[0].stage == "retrieving installer components"
    assert any("installer prompt" in n for n in notes.notes)
    # Questions the preseed answered were skipped, not prompts:
    assert any("netcfg/get_hostname" in line for line in log.lines())


def test_no_prompt_when_questions_are_skipped() -> None:
    tracker = InstallerTracker()
    events = []
    for text in (
        b"<15>Nov 28 03:49:17 debconf: --> INPUT high netcfg/get_hostname",
        b"<15>Nov 28 03:49:17 debconf: <-- 30 question skipped",
        b"<15>Nov 28 03:49:17 debconf: --> GO",
        b"<15>Nov 28 03:49:17 debconf: <-- 0 ok",
    ):
        msg = parse_syslog(text)
        assert msg is not None
        events += tracker.feed(msg)
    assert [e for e in events if e.kind == "prompt"] == []


@pytest.mark.parametrize(
    "line, kind",
    [
        (b"<11>Nov 28 04:00:00 main-menu[1]: WARNING **: Configuring 'apt-setup-udeb' failed with error code 1", "error"),
        (b"<14>Nov 28 04:00:00 anna[2]: wget: server returned error: HTTP/1.1 404 Not Found", "error"),
        (b"<15>Nov 28 04:00:00 debconf: --> SET retriever/net/error Retry", None),
        (b"<14>Nov 28 04:00:00 netcfg[3]: INFO: Found link on ens3", "message"),
    ],
)
def test_error_classification(line: bytes, kind: str | None) -> None:
    msg = parse_syslog(line)
    assert msg is not None
    kinds = [e.kind for e in InstallerTracker().feed(msg) if e.kind != "stage"]
    assert kinds == ([kind] if kind else [])


def test_menu_items_set_the_stage_in_order() -> None:
    tracker = InstallerTracker()
    stages = []
    for item in ("partman-base", "bootstrap-base", "pkgsel", "grub-installer", "finish-install"):
        msg = parse_syslog(f"<14>Nov 28 04:00:00 main-menu[9]: INFO: Menu item '{item}' selected".encode())
        assert msg is not None
        stages += [e.stage for e in tracker.feed(msg) if e.kind == "stage"]
    assert stages == ["partitioning", "base system", "packages", "boot loader", "finish"]


def test_serial_dialog_marker() -> None:
    assert serial_shows_dialog((DATA / "d-i-trixie-dialog.serial").read_bytes())
    assert not serial_shows_dialog((DATA / "d-i-trixie-progress.serial").read_bytes())


def test_udp_listener_on_loopback(tmp_path: Path) -> None:
    raw = tmp_path / "installer-syslog.txt"
    with InstallerLog(raw_log=raw) as log:
        assert log.port > 0
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            for datagram in recorded():
                sock.sendto(datagram, ("127.0.0.1", log.port))
        finally:
            sock.close()
        assert log.wait_for(lambda l: bool(l.prompts()), timeout=10)
        assert log.stage == "retrieving installer components"
        sock_name = log._sock.getsockname() if log._sock else None
        assert sock_name is not None and sock_name[0] == "127.0.0.1"
    assert log._sock is None  # closed on exit
    assert "netcfg" in raw.read_text()
    # The port is free again.
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.bind(("127.0.0.1", log.port))
    finally:
        probe.close()


def test_listener_closes_on_error_and_refuses_non_loopback() -> None:
    with pytest.raises(ImgbuildError, match="loopback"):
        InstallerLog(host="0.0.0.0")
    log = InstallerLog()
    with pytest.raises(RuntimeError), log:
        raise RuntimeError("boom")
    assert log._sock is None


def test_wait_for_times_out() -> None:
    with InstallerLog() as log:
        assert not log.wait_for(lambda l: bool(l.prompts()), timeout=0.3)
