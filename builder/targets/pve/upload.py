"""Uploading ISOs and golden images to a PVE storage: content-addressed, streamed, verified, retried.

- File names carry the content hash (``<label>-<sha256[:16]>.iso`` / ``.qcow2``): before uploading,
  the storage's content is listed, and a file whose name ends in the same hash and whose size matches
  is reused as is. A file of that name with another size is not trusted: it is deleted and replaced.
  pve-storage lists ``iso``, ``vztmpl`` and ``import`` files with their size on disk (``$st->size`` in
  PVE/Storage/Plugin.pm), a qcow2 in ``import`` included: the local file's byte count is what must match,
  never the image's virtual size (which only ``images`` volumes are listed with).
- The body (``FileForm``) is framed by requests-toolbelt's ``MultipartEncoder`` and streams the file
  in 1 MiB blocks through one reused buffer, so memory stays flat whatever the size; the text fields
  ``content``, ``checksum-algorithm=sha256`` and ``checksum`` come before the file part (named
  ``filename``), so PVE verifies the upload in its import task.
- Timeouts: short to connect, generous (sized to the file) for writing and for the answer.
- A dropped connection or a 502/503/504 answer is retried (bounded, with backoff). PVE writes an
  upload to a temporary file and only moves it into place after the checksum matched, so an
  interrupted upload never leaves a file under the final name.
"""

from __future__ import annotations

import io
import logging
import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import requests
from requests_toolbelt import MultipartEncoder

from builder.errors import ImgbuildError
from builder.progress import NullProgress, Progress
from builder.targets.pve.client import PveClient, PveError, read_json_response, volume_path

log = logging.getLogger(__name__)

CONNECT_TIMEOUT = 10.0
MIN_TRANSFER_TIMEOUT = 300.0  # seconds a single write or the final answer may take at least
MIN_RATE = 2 * 1024 * 1024  # bytes/s assumed when sizing the import task's deadline
UPLOAD_ATTEMPTS = 3
RETRY_STATUS = {502, 503, 504, 596}
UPLOAD_BLOCK = 1 << 20


def upload_name(label: str, sha256: str, suffix: str) -> str:
    """``<label>-<sha256[:16]><suffix>`` with the label reduced to what PVE keeps ([A-Za-z0-9_.-])."""
    return f"{_safe_label(label, suffix)}-{sha256[:16]}{suffix}"


def _safe_label(label: str, suffix: str) -> str:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", label).strip("-.") or "imgbuild"
    if safe.endswith(suffix):
        safe = safe[: -len(suffix)]
    return safe[:80]


class Uploader:
    def __init__(self, client: PveClient, node: str, *, sleep: Callable[[float], None] = time.sleep) -> None:
        self.client = client
        self.node = node
        self._sleep = sleep

    # --- what is there -------------------------------------------------------------------------
    def listing(self, storage: str, content: str) -> list[dict[str, Any]]:
        return list(self.client.get(f"/nodes/{self.node}/storage/{storage}/content", content=content) or [])

    def find_existing(self, storage: str, content: str, sha256: str, suffix: str,
                      size: int) -> tuple[str | None, list[str]]:
        """(volid of a trusted copy, volids of same-hash files whose size is wrong)."""
        tail = f"-{sha256[:16]}{suffix}"
        good, bad = None, []
        for entry in self.listing(storage, content):
            volid = str(entry.get("volid", ""))
            if not volid.endswith(tail):
                continue
            if int(entry.get("size") or -1) == size and good is None:
                good = volid
            elif int(entry.get("size") or -1) != size:
                bad.append(volid)
        return good, bad

    def superseded(self, storage: str, content: str, label: str, sha256: str, suffix: str) -> list[str]:
        """Uploads of the same *label* (see upload_name) with another content hash than *sha256*."""
        pattern = re.compile(re.escape(_safe_label(label, suffix)) + r"-[0-9a-f]{16}" + re.escape(suffix))
        current = upload_name(label, sha256, suffix)
        found = []
        for entry in self.listing(storage, content):
            volid = str(entry.get("volid", ""))
            name = volid.partition(":")[2].partition("/")[2]
            if name != current and pattern.fullmatch(name):
                found.append(volid)
        return found

    def delete(self, volid: str, *, what: str) -> None:
        self.client.run("DELETE", volume_path(self.node, volid), what=what, wait=120)

    # --- upload --------------------------------------------------------------------------------
    def upload(self, path: Path, *, storage: str, content: str, filename: str, sha256: str, label: str,
               progress: Progress = NullProgress()) -> str:
        """Upload *path* as *filename*; return the new volid once PVE's import task verified it."""
        size = path.stat().st_size
        transfer_timeout = max(MIN_TRANSFER_TIMEOUT, size / MIN_RATE)
        last: ImgbuildError | None = None
        for attempt in range(1, UPLOAD_ATTEMPTS + 1):
            try:
                upid = self.post(path, storage=storage, content=content, filename=filename, sha256=sha256,
                                 label=label, progress=progress)
            except _Retryable as exc:
                last = exc.error
                if attempt == UPLOAD_ATTEMPTS:
                    break
                delay = float(attempt)
                progress.note(f"upload of {filename} interrupted ({exc.error.message}); retrying in {delay:.0f}s "
                              f"(attempt {attempt + 1} of {UPLOAD_ATTEMPTS})")
                self._sleep(delay)
                continue
            self.client.wait_task(upid, timeout=transfer_timeout, what=f"import of {filename} into {storage}")
            return f"{storage}:{content}/{filename}"
        assert last is not None
        raise ImgbuildError(f"upload of {filename} to {storage} failed after {UPLOAD_ATTEMPTS} attempts: {last.message}",
                            detail=last.detail)

    def post(self, path: Path, *, storage: str, content: str, filename: str, sha256: str, label: str,
             progress: Progress = NullProgress()) -> str:
        """One upload request (no retry): stream *path* and return the UPID of PVE's import task."""
        size = path.stat().st_size
        timeout = max(MIN_TRANSFER_TIMEOUT, size / MIN_RATE)
        api_path = f"/nodes/{self.node}/storage/{storage}/upload"
        session = self.client.transfer_session(write_timeout=timeout)
        try:
            body = FileForm([("content", content), ("checksum-algorithm", "sha256"), ("checksum", sha256)],
                            "filename", filename, path,
                            on_progress=lambda done: progress.transfer(label, done, size))
            progress.transfer(label, 0, size)
            try:
                resp = session.post(self.client.url(api_path), data=cast(Any, body), headers={"Content-Type": body.content_type},
                                    timeout=(CONNECT_TIMEOUT, timeout), verify=self.client.tls.verify)
            except (requests.exceptions.ConnectionError, requests.exceptions.ChunkedEncodingError,
                    requests.exceptions.Timeout) as exc:  # SSLError is a ConnectionError
                error = self.client.transport_error("POST", api_path, exc)
                raise (_Retryable(error) if error.transient else error) from None
        finally:
            session.close()
        data, errors = read_json_response(resp)
        if resp.status_code != 200:
            error = self.client.http_error("POST", api_path, resp.status_code, resp.reason or "", errors)
            if resp.status_code in RETRY_STATUS:
                raise _Retryable(error)
            raise error
        if not isinstance(data, str) or not data.startswith("UPID:"):
            raise PveError(f"Proxmox VE accepted the upload of {filename} but returned no task id")
        return data


class FileForm:
    """A multipart/form-data body: text fields, then one file part streamed from disk.

    requests-toolbelt's MultipartEncoder encodes the form (boundary, the fields, the file part's
    headers); the file's bytes are sent between that head and the closing boundary, read with
    ``readinto`` into one reused 1 MiB buffer. Memory stays flat, and the CPU cost per GiB is that of
    curl: MultipartEncoder's own read path copies every block three times through a BytesIO and
    allocates a fresh 1 MiB string per block, which measured ~0.6 CPU-seconds per GiB more than this
    (bench/pve.md) - on a 2-core machine shared with the server that halved the throughput.

    Iterable with a length, so requests sends it with Content-Length (PVE refuses chunked uploads);
    each iteration re-reads the file, so a retried request sends it whole again.
    """

    def __init__(self, fields: list[tuple[str, str]], file_field: str, filename: str, path: Path, *,
                 block: int = UPLOAD_BLOCK, on_progress: Callable[[int], None] | None = None) -> None:
        skeleton = MultipartEncoder(fields=[*fields, (file_field, (filename, io.BytesIO(b""),
                                                                   "application/octet-stream"))])
        encoded = skeleton.to_string()
        tail = f"\r\n--{skeleton.boundary_value}--\r\n".encode()
        if not encoded.endswith(tail):  # pragma: no cover - requests-toolbelt changed its framing
            raise ImgbuildError("unexpected multipart framing from requests-toolbelt")
        self.head, self.tail = encoded[: -len(tail)], tail
        self.content_type = skeleton.content_type
        self.path = path
        self.size = path.stat().st_size
        self.block = block
        self.on_progress = on_progress

    def __len__(self) -> int:
        return len(self.head) + self.size + len(self.tail)

    def __iter__(self) -> Iterator[bytes | memoryview]:
        yield self.head
        sent = 0
        buf = bytearray(self.block)
        view = memoryview(buf)
        with open(self.path, "rb", buffering=0) as fh:
            while n := fh.readinto(buf):
                sent += n
                if sent > self.size:
                    break
                yield view[:n]  # sent before the next readinto: the buffer can be reused
                if self.on_progress is not None:
                    self.on_progress(sent)
        if sent != self.size:
            raise ImgbuildError(f"{self.path} changed size during the upload ({self.size} bytes expected)")
        yield self.tail


class _Retryable(Exception):
    def __init__(self, error: ImgbuildError) -> None:
        super().__init__(error.message)
        self.error = error
