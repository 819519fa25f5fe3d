"""Incremental multipart/form-data parser for uploads, streaming the file part to disk.

Follows pve-http-server's ``file_upload_multipart``: parts start with ``--BOUNDARY`` and header
lines, a blank line, then data up to ``[CR]LF--BOUNDARY``; the file part (one with a filename)
must be named ``filename``; other parts are form fields (64 KiB in total at most). The body is fed
in large chunks; only a tail as long as the delimiter is kept between chunks, so memory stays flat
whatever the file size.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import BinaryIO

LIMIT_FIELDS = 64 * 1024
MAX_HEADER = 2048


class MultipartError(Exception):
    pass


def parse_content_type(value: str) -> tuple[str, str | None]:
    """(type, boundary) like ``parse_content_type`` of pve-http-server."""
    parts = re.split(r"\s*[;,]\s*", value.strip()) if value else [""]
    boundary = None
    for param in parts[1:]:
        m = re.match(r"^\s*boundary\s*=\s*(\S+?)\s*$", param)
        if m:
            boundary = m.group(1).strip('"')
            break
    return parts[0].lower(), boundary


def parse_content_disposition(value: str) -> tuple[str, str | None, str | None]:
    parts = re.split(r"\s*[;,]\s*", value.strip())
    name = filename = None
    for param in parts[1:]:
        m = re.match(r"^\s*name\s*=\s*(\S+?)\s*$", param)
        if m:
            name = re.sub(r'^"(.*)"$', r"\1", m.group(1))
            continue
        m = re.match(r"^\s*filename\s*=\s*(.+?)\s*$", param)
        if m:
            filename = re.sub(r'^"(.*)"$', r"\1", m.group(1))
    return parts[0].lower(), name, filename


class MultipartUpload:
    HEADERS, FILE, FIELD, DONE, SKIP = range(5)

    def __init__(self, boundary: str, dest: Path) -> None:
        self.boundary = boundary.encode("latin-1")
        self.delim = b"\n--" + self.boundary
        self.keep = len(self.delim) + 4  # tail kept between chunks: a delimiter may straddle them
        self.dest = dest
        self.out: BinaryIO | None = None
        self.buf = bytearray()
        self.phase = self.HEADERS
        self.fields: dict[str, str] = {}
        self.field_name = ""
        self.field_bytes = 0
        self.filename: str | None = None
        self.file_bytes = 0
        self.complete = False  # a file part was received in full
        self.problem: str | None = None

    # --- feeding ---------------------------------------------------------------------------------
    def feed(self, chunk: bytes) -> None:
        if self.phase == self.SKIP or self.phase == self.DONE:
            return
        self.buf += chunk
        while self._step():
            pass

    def finish(self) -> None:
        """End of body: a file part still open means the closing boundary never came."""
        if self.phase == self.FILE:
            self.problem = "upload body ended inside the file part (no closing boundary)"
            self.complete = False
        if self.out is not None:
            self.out.close()
            self.out = None

    def discard(self) -> None:
        if self.out is not None:
            self.out.close()
            self.out = None
        self.dest.unlink(missing_ok=True)

    # --- the state machine ---------------------------------------------------------------------
    def _abort(self, problem: str) -> bool:
        self.problem = problem
        self.phase = self.SKIP
        self.buf.clear()
        return False

    def _find_end(self) -> tuple[int, int, bool] | None:
        """(data end, next part start, last part) of the current part's data, or None if not yet seen."""
        idx = self.buf.find(self.delim)
        if idx < 0:
            return None
        after = idx + len(self.delim)
        if len(self.buf) < after + 2:
            return None  # need the two bytes after the boundary to tell '--' from CRLF
        end = idx - 1 if idx > 0 and self.buf[idx - 1] == 0x0D else idx
        last = self.buf[after : after + 2] == b"--"
        return end, idx + 1, last

    def _step(self) -> bool:
        if self.phase == self.HEADERS:
            m = re.match(rb"^.*?--" + re.escape(self.boundary) + rb"\r?\n((?:[^\r\n]+\r?\n)*)\r?\n", self.buf, re.S)
            if not m:
                if len(self.buf) > MAX_HEADER + self.keep:
                    del self.buf[: len(self.buf) - (MAX_HEADER + self.keep)]
                return False
            headers = m.group(1).decode("utf-8", "replace")
            del self.buf[: m.end()]
            disp = name = filename = None
            for line in re.split(r"\r?\n", headers):
                hm = re.match(r"^Content-Disposition\s*:\s*(.*)", line, re.I)
                if hm:
                    disp, name, filename = parse_content_disposition(hm.group(1))
            if not (disp == "form-data" and name):
                return self._abort("wrong content disposition in multipart - abort upload")
            self.field_name = name
            if filename is not None:
                if name != "filename":
                    return self._abort("wrong field name for file upload - abort upload")
                self.filename = filename
                self.out = open(self.dest, "wb")
                self.phase = self.FILE
            else:
                self.phase = self.FIELD
            return True
        if self.phase == self.FILE:
            assert self.out is not None
            found = self._find_end()
            if found is None:
                n = len(self.buf) - self.keep
                if n > 0:
                    self.out.write(memoryview(self.buf)[:n])
                    self.file_bytes += n
                    del self.buf[:n]
                return False
            end, nxt, last = found
            self.out.write(memoryview(self.buf)[:end])
            self.file_bytes += end
            self.out.close()
            self.out = None
            del self.buf[:nxt]
            self.complete = True
            self.phase = self.DONE if last else self.HEADERS
            return not last
        if self.phase == self.FIELD:
            found = self._find_end()
            if found is None:
                if len(self.buf) > LIMIT_FIELDS:
                    return self._abort("form data to large - abort upload")
                return False
            end, nxt, last = found
            self.field_bytes += end
            if self.field_bytes >= LIMIT_FIELDS:
                return self._abort("form data to large - abort upload")
            self.fields[self.field_name] = bytes(self.buf[:end]).decode("utf-8", "replace")
            del self.buf[:nxt]
            self.phase = self.DONE if last else self.HEADERS
            return not last
        return False
