"""Uploads: multipart rules, file names, content types, checksums verified in the task, listing, delete."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from tests.pvesim_tests.conftest import Client, upload

REPO = Path(__file__).resolve().parents[2]
PAYLOAD = os.urandom(256 * 1024) + b"\r\n--not-the-boundary\r\n" + os.urandom(1000)


def test_iso_with_checksum_is_verified_in_the_task_and_listed(pve: Client) -> None:
    digest = hashlib.sha256(PAYLOAD).hexdigest()
    resp = upload(pve, "debian seed (1).iso", PAYLOAD, **{"checksum-algorithm": "sha256", "checksum": digest})
    assert resp.status_code == 200, resp.text
    upid = resp.json()["data"]
    assert upid.startswith("UPID:pve:") and ":imgcopy::root@pam!imgbuild:" in upid
    log = pve.ok(upid)
    assert "calculating checksum...OK, checksum verified" in log and log[-1] == "TASK OK"
    content = pve.data("get", "/nodes/pve/storage/local/content", content="iso")
    assert [(c["volid"], c["size"], c["format"]) for c in content] == [("local:iso/debian_seed__1_.iso", len(PAYLOAD), "iso")]
    assert content[0]["ctime"] > 0
    assert pve.sim.volume_path("local:iso/debian_seed__1_.iso").read_bytes() == PAYLOAD
    assert pve.sim.uploads[-1]["bytes"] == len(PAYLOAD)


def test_bad_checksum_fails_in_the_task_only(pve: Client) -> None:
    resp = upload(pve, "seed.iso", PAYLOAD, **{"checksum-algorithm": "sha256", "checksum": "0" * 64})
    assert resp.status_code == 200  # the call itself succeeds; the task fails
    status, log = pve.wait(resp.json()["data"])
    got = hashlib.sha256(PAYLOAD).hexdigest()
    assert status == f"checksum mismatch: got '{got}' != expect '{'0' * 64}'"
    assert log[-1] == f"TASK ERROR: {status}"
    assert pve.sim.volume_ids() == []
    assert list(pve.sim.tmp_dir.iterdir()) == []


def test_checksum_needs_its_algorithm(pve: Client) -> None:
    with pve.sim.expecting_rejection("schema"):
        resp = upload(pve, "seed.iso", PAYLOAD, checksum="abc")
    assert resp.json()["errors"] == {"checksum-algorithm": "missing property - 'checksum' requires this property"}
    assert list(pve.sim.tmp_dir.iterdir()) == []


def test_file_names_and_content_types(pve: Client) -> None:
    with pve.sim.expecting_rejection("param"):
        resp = upload(pve, "seed.qcow2", PAYLOAD)
    assert resp.status_code == 400 and resp.json()["errors"] == {"filename": "wrong file extension"}
    pve.ok(upload(pve, "installer.IMG", PAYLOAD).json()["data"])
    with pve.sim.expecting_rejection("schema"):
        resp = upload(pve, "x.iso", PAYLOAD, content="images")
    assert "content" in resp.json()["errors"]
    with pve.sim.expecting_rejection("param"):
        resp = upload(pve, "web.img", PAYLOAD, content="import")
    assert resp.json()["errors"] == {"filename": "invalid filename or wrong extension"}
    resp = pve.session.post(pve.sim.api_url + "/nodes/pve/storage/local-lvm/upload", data={"content": "iso"},
                            files={"filename": ("a.iso", PAYLOAD)}, timeout=30)
    assert (resp.status_code, resp.reason) == (500, "can't upload to storage type 'lvmthin'")
    assert pve.sim.volume_ids() == ["local:iso/installer.IMG"]


def test_import_qcow2_is_checked_and_listed_by_its_bytes(pve: Client, tmp_path: Path) -> None:
    image = tmp_path / "golden.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "3G"], check=True)
    pve.ok(upload(pve, "web-server-1a2b.qcow2", image.read_bytes(), content="import").json()["data"])
    # the listing: size on disk ($st->size, pve-storage Plugin.pm); the volume's info: the virtual size
    [entry] = pve.data("get", "/nodes/pve/storage/local/content", content="import")
    assert (entry["volid"], entry["format"], entry["size"]) == ("local:import/web-server-1a2b.qcow2", "qcow2",
                                                                image.stat().st_size)
    info = pve.data("get", "/nodes/pve/storage/local/content/local:import/web-server-1a2b.qcow2")
    assert info["size"] == 3 << 30 and info["format"] == "qcow2"
    status, _ = pve.wait(upload(pve, "fake.qcow2", b"not a qcow2", content="import").json()["data"])
    assert status == "file 'fake.qcow2' is not a valid qcow2 image" or "not a valid qcow2" in status


def test_same_name_overwrites(pve: Client) -> None:
    pve.ok(upload(pve, "seed.iso", b"first").json()["data"])
    pve.ok(upload(pve, "seed.iso", b"second!").json()["data"])
    [entry] = pve.data("get", "/nodes/pve/storage/local/content")
    assert entry["size"] == 7 and pve.sim.volume_path(entry["volid"]).read_bytes() == b"second!"


def test_multipart_rules(pve: Client) -> None:
    url = pve.sim.api_url + "/nodes/pve/storage/local/upload"
    with pve.sim.expecting_rejection("upload"):
        resp = pve.session.post(url, data={"content": "iso"}, files={"file": ("a.iso", PAYLOAD)}, timeout=30)
    assert (resp.status_code, resp.reason) == (501, "upload failed")
    with pve.sim.expecting_rejection("upload"):
        resp = pve.session.post(url, data=b"content=iso", headers={"Content-Type": "application/octet-stream"}, timeout=30)
    assert resp.status_code == 501 and "not implemented" in resp.reason
    with pve.sim.expecting_rejection("transfer-encoding"):
        resp = pve.session.post(url, data=iter([PAYLOAD]), headers={"Content-Type": "multipart/form-data; boundary=x"},
                                timeout=30)
    assert (resp.status_code, resp.reason) == (501, "chunked transfer encoding not supported")
    # fields after the file part are accepted too (PVE parses parts in any order)
    body = (b"--B\r\nContent-Disposition: form-data; name=\"filename\"; filename=\"late.iso\"\r\n"
            b"Content-Type: application/octet-stream\r\n\r\n" + PAYLOAD +
            b"\r\n--B\r\nContent-Disposition: form-data; name=\"content\"\r\n\r\niso\r\n--B--\r\n")
    resp = pve.session.post(url, data=body, headers={"Content-Type": "multipart/form-data; boundary=B"}, timeout=30)
    pve.ok(resp.json()["data"])
    assert pve.sim.volume_path("local:iso/late.iso").read_bytes() == PAYLOAD
    assert list(pve.sim.tmp_dir.iterdir()) == []


def test_delete_volume(pve: Client) -> None:
    pve.ok(upload(pve, "seed.iso", PAYLOAD).json()["data"])
    upid = pve.data("delete", "/nodes/pve/storage/local/content/local:iso/seed.iso")
    assert pve.ok(upid)[0] == "Removed volume 'local:iso/seed.iso'"
    assert pve.sim.volume_ids() == []
    # a missing volume: the task warns; with delay the call waits and answers null
    status, log = pve.wait(pve.data("delete", "/nodes/pve/storage/local/content/iso/seed.iso"))
    assert status == "WARNINGS: 1" and log[-1] == "TASK WARNINGS: 1"
    assert pve.data("delete", "/nodes/pve/storage/local/content/local:iso/seed.iso", delay=5) is None


@pytest.mark.boot  # not a boot, but 1 GiB through TLS: 7-25 s depending on the machine's load
def test_large_upload_streams_with_flat_server_memory(tmp_path: Path) -> None:
    """1 GiB through requests-toolbelt to the simulator as a process: its peak RSS stays small."""
    from requests_toolbelt import MultipartEncoder

    size = 1 << 30
    src = tmp_path / "big.iso"
    with open(src, "wb") as fh:
        fh.truncate(size)  # sparse: reading it costs no disk
    shm = Path("/dev/shm")
    data_dir = (shm if shm.is_dir() and os.access(shm, os.W_OK) else tmp_path) / f"pvesim-big-{os.getpid()}"
    env = dict(os.environ, PYTHONPATH=str(REPO), PVESIM_TOKEN="root@pam!big=secret")
    proc = subprocess.Popen([sys.executable, "-m", "tests.pvesim", "--data-dir", str(data_dir)], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        import json

        info = json.loads(proc.stdout.readline())
        with open(src, "rb") as fh:
            enc = MultipartEncoder(fields={"content": "iso", "checksum-algorithm": "sha256",
                                           "checksum": hashlib.sha256(b"\0" * size).hexdigest(),
                                           "filename": ("big.iso", fh, "application/octet-stream")})
            resp = requests.post(info["api_url"] + "/nodes/pve/storage/local/upload", data=enc,
                                 headers={"Content-Type": enc.content_type, "Authorization": "PVEAPIToken=root@pam!big=secret"},
                                 verify=info["ca_file"], timeout=600)
        assert resp.status_code == 200, resp.text
        status = {}
        s = requests.Session()
        s.trust_env = False
        s.headers["Authorization"] = "PVEAPIToken=root@pam!big=secret"
        upid = resp.json()["data"]
        for _ in range(600):
            status = s.get(f"{info['api_url']}/nodes/pve/tasks/{upid}/status", verify=info["ca_file"], timeout=30).json()["data"]
            if status["status"] == "stopped":
                break
            import time

            time.sleep(0.1)
        assert status["exitstatus"] == "OK"
        hwm = next(int(line.split()[1]) for line in open(f"/proc/{proc.pid}/status") if line.startswith("VmHWM"))
        assert hwm < 120 * 1024, f"simulator peak RSS {hwm} KiB for a 1 GiB upload"
    finally:
        proc.terminate()
        proc.wait(10)
        import shutil

        shutil.rmtree(data_dir, ignore_errors=True)
