"""Staging artifacts on PVE storages: content-addressed names, checksums PVE verifies, retries, no half files."""

from __future__ import annotations

import hashlib
import time
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.proc import run
from builder.progress import NullProgress
from builder.targets.pve.connect import target_from_config
from builder.targets.pve.upload import Uploader
from tests.pve.conftest import uploads_in
from tests.pve.test_client import config_for
from tests.pvesim.simulator import PveSimulator


class Recorder(NullProgress):
    def __init__(self) -> None:
        self.transfers: list[tuple[str, int, int | None]] = []
        self.notes: list[str] = []

    def transfer(self, label: str, done: int, total: int | None) -> None:
        self.transfers.append((label, done, total))

    def note(self, text: str) -> None:
        self.notes.append(text)


def test_iso_upload_is_content_addressed_and_verified(target, pve_sim: PveSimulator, small_iso: Path) -> None:  # type: ignore[no-untyped-def]
    digest = hashlib.sha256(small_iso.read_bytes()).hexdigest()
    progress = Recorder()
    staged = target.stage(small_iso, "iso", label="web-server-seed", progress=progress)
    assert staged.ref == f"local:iso/web-server-seed-{digest[:16]}.iso"
    assert staged.uploaded and staged.sha256 == digest and staged.size == small_iso.stat().st_size
    assert pve_sim.volume_path(staged.ref).read_bytes() == small_iso.read_bytes()
    (upload,) = uploads_in(pve_sim)
    assert upload.params["checksum-algorithm"] == "sha256" and upload.params["checksum"] == digest
    assert upload.params["content"] == "iso"
    assert progress.transfers[-1][1:] == (staged.size, staged.size)
    # a second stage lists the storage and uploads nothing
    again = target.stage(small_iso, "iso", label="other-label-seed")
    assert again.ref == staged.ref and not again.uploaded
    assert len(uploads_in(pve_sim)) == 1


def test_golden_image_goes_to_import_content_once(target, pve_sim: PveSimulator, small_qcow2: Path) -> None:  # type: ignore[no-untyped-def]
    staged = target.stage(small_qcow2, "image", label="web-server golden image")
    assert staged.ref.startswith("local:import/web-server-golden-image-") and staged.ref.endswith(".qcow2")
    # pve-storage lists an import qcow2 with its bytes on disk, not its 1 GiB virtual size: the re-run must
    # trust that listing (it once compared the virtual size, deleted the upload and sent it again every run)
    [listed] = [e for e in Uploader(target.client, "pve").listing("local", "import") if e["volid"] == staged.ref]
    assert listed["size"] == small_qcow2.stat().st_size != 1 << 30
    again = target.stage(small_qcow2, "image", label="web-server golden image")
    assert not again.uploaded and again.ref == staged.ref
    assert len(uploads_in(pve_sim)) == 1 and pve_sim.requests_matching("DELETE") == []


def test_a_refreshed_golden_image_replaces_the_older_upload(  # type: ignore[no-untyped-def]
        target, pve_sim: PveSimulator, small_qcow2: Path, tmp_path: Path) -> None:
    def qcow2(name: str, size: str) -> Path:  # other sizes, other bytes: other content addresses
        run(["qemu-img", "create", "-q", "-f", "qcow2", tmp_path / name, size])
        return tmp_path / name

    other = target.stage(qcow2("ssh.qcow2", "3G"), "image", label="ssh-server golden image")
    old = target.stage(small_qcow2, "image", label="web-server golden image")
    refreshed = qcow2("refreshed.qcow2", "2G")
    progress = Recorder()
    new = target.stage(refreshed, "image", label="web-server golden image", progress=progress)
    assert new.uploaded and new.ref != old.ref
    volumes = pve_sim.volume_ids()
    assert new.ref in volumes and other.ref in volumes and old.ref not in volumes
    assert any(old.ref in note for note in progress.notes)


def test_storage_without_import_content_is_a_clear_error(pve_sim_factory, small_qcow2: Path) -> None:  # type: ignore[no-untyped-def]
    sim = pve_sim_factory(import_content=False)
    target = target_from_config(config_for(sim))
    with pytest.raises(ImgbuildError) as err:
        target.stage(small_qcow2, "image", label="golden")
    assert "does not take disk images for import" in err.value.message
    assert "pvesm set local --content" in err.value.detail
    assert uploads_in(sim) == []


def test_dropped_connection_is_retried(target, pve_sim: PveSimulator, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    big = tmp_path / "installer.iso"
    big.write_bytes(hashlib.sha256(b"x").digest() * (3 * 1024 * 1024 // 32))  # 3 MiB
    rule = pve_sim.faults.drop_upload(after_bytes=1 << 20)
    progress = Recorder()
    staged = target.stage(big, "iso", label="web-server-installer", progress=progress)
    assert rule.hits == 1
    assert any("interrupted" in n for n in progress.notes)
    assert pve_sim.volume_path(staged.ref).read_bytes() == big.read_bytes()
    assert [r.upload_bytes > 0 for r in uploads_in(pve_sim)] == [True, True]
    assert pve_sim.volume_ids() == [staged.ref]  # nothing half-written left behind


def test_upload_gives_up_after_bounded_retries(target, pve_sim: PveSimulator, small_iso: Path) -> None:  # type: ignore[no-untyped-def]
    pve_sim.faults.http_error("POST", r"/upload$", status=503, message="service unavailable", count=None)
    with pytest.raises(ImgbuildError, match=r"failed after 3 attempts: .*service unavailable"):
        target.stage(small_iso, "iso", label="seed")
    assert len(uploads_in(pve_sim)) == 3 and pve_sim.volume_ids() == []


def test_failed_import_task_reports_pve_message(target, pve_sim: PveSimulator, small_iso: Path) -> None:  # type: ignore[no-untyped-def]
    pve_sim.faults.fail_task("imgcopy", message="checksum mismatch: got 'x' != expect 'y'")
    with pytest.raises(ImgbuildError) as err:
        target.stage(small_iso, "iso", label="seed")
    assert "import of seed-" in err.value.message and "checksum mismatch" in err.value.message
    assert "TASK ERROR" in err.value.detail
    assert pve_sim.volume_ids() == []


def test_same_hash_with_wrong_size_is_replaced(target, pve_sim: PveSimulator, small_iso: Path) -> None:  # type: ignore[no-untyped-def]
    staged = target.stage(small_iso, "iso", label="seed")
    path = pve_sim.volume_path(staged.ref)
    path.write_bytes(path.read_bytes()[:1000])  # a truncated copy under the trusted name
    again = target.stage(small_iso, "iso", label="seed")
    assert again.uploaded and again.ref == staged.ref
    assert pve_sim.volume_path(staged.ref).read_bytes() == small_iso.read_bytes()


def test_unstage_removes_and_is_idempotent(target, pve_sim: PveSimulator, small_iso: Path) -> None:  # type: ignore[no-untyped-def]
    staged = target.stage(small_iso, "iso", label="seed")
    target.unstage(staged)
    target.unstage(staged)
    assert pve_sim.volume_ids() == []


def test_writes_use_the_generous_timeout_not_the_connect_one(pve_sim: PveSimulator) -> None:
    """urllib3 sends a body under the *connect* timeout; the transfer session must not: a server that stalls
    for 3 s before reading must not break an upload whose connect timeout is 1 s."""
    import socket
    import ssl
    import threading

    import requests

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(pve_sim.cert.cert_file, pve_sim.cert.key_file)
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def handle(conn: socket.socket) -> None:
        with ctx.wrap_socket(conn, server_side=True) as tls:
            time.sleep(3)  # stalled: the client's socket buffers fill up meanwhile
            tls.settimeout(30)
            got = 0
            try:
                while got < 32 << 20 and (data := tls.recv(1 << 20)):
                    got += len(data)
                if got >= 32 << 20:
                    tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
            except OSError:
                pass

    def serve() -> None:
        for _ in range(2):
            conn, _ = listener.accept()
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    body = b"\0" * (32 << 20)
    url = f"https://127.0.0.1:{port}/"
    plain = requests.Session()
    with pytest.raises(requests.exceptions.RequestException):  # what proxmoxer's session would do
        plain.post(url, data=body, timeout=(1, 30), verify=str(pve_sim.ca_file))
    client = PveClientFor(pve_sim)
    resp = client.transfer_session(write_timeout=30).post(url, data=body, timeout=(1, 30),
                                                          verify=client.tls.verify)
    assert resp.status_code == 200
    listener.close()
    thread.join(10)


def PveClientFor(sim: PveSimulator):  # type: ignore[no-untyped-def]
    from builder.targets.pve.client import PveClient

    return PveClient(config_for(sim))
