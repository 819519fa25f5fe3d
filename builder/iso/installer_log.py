"""Following the Debian installer through its remote syslog (``log_host=… log_port=…`` on the kernel line).

d-i's busybox syslogd sends every message as one UDP datagram (``<PRI>Mmm dd hh:mm:ss tag[pid]: text``).
From QEMU user networking the guest's packets to the slirp host address arrive on the host's
127.0.0.1:PORT, so the listener binds loopback only.

Messages are sorted into events: the installer's *stage* (network, mirror, retrieving installer
components, partitioning, base system, packages, boot loader, finish), *errors*, successful *fetches*
(wget's ``URL:… [n/n]`` lines) and *prompts*. A prompt is reliable only with ``DEBCONF_DEBUG=5`` on the
kernel line: cdebconf then logs each ``INPUT`` and answers ``question will be asked`` for a question
that is really shown (``question skipped`` otherwise).

Note: nothing arrives before the installer has configured its network; prompts before that point
(language, network) are visible only on the serial console (see ``serial_shows_dialog``).
"""

from __future__ import annotations

import re
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Literal

from builder.errors import ImgbuildError
from builder.progress import NullProgress, Progress
from builder.secrets.redact import redact

EventKind = Literal["stage", "error", "prompt", "fetched", "message"]

_SYSLOG = re.compile(
    r"^<(?P<pri>\d{1,3})>"
    r"(?:(?P<stamp>[A-Z][a-z]{2} [ \d]\d \d\d:\d\d:\d\d) )?"
    r"(?P<tag>[^\s:\[]+)(?:\[(?P<pid>\d+)\])?: ?"
    r"(?P<text>.*)$",
    re.S,
)

# main-menu "Menu item 'X' selected" -> stage
MENU_STAGES = {
    "localechooser": "language",
    "console-setup-udeb": "keyboard",
    "network-preseed": "preseed",
    "ethdetect": "hardware detection",
    "hw-detect": "hardware detection",
    "netcfg": "network",
    "choose-mirror": "mirror",
    "download-installer": "retrieving installer components",
    "user-setup-udeb": "users",
    "clock-setup": "clock",
    "disk-detect": "disks",
    "partman-base": "partitioning",
    "bootstrap-base": "base system",
    "apt-setup-udeb": "apt setup",
    "pkgsel": "packages",
    "grub-installer": "boot loader",
    "finish-install": "finish",
}

# syslog tag (program) -> stage, for messages that are not menu selections
TAG_STAGES = (
    ("netcfg", "network"),
    ("choose-mirror", "mirror"),
    ("anna[", "retrieving installer components"),
    ("net-retriever", "retrieving installer components"),
    ("partman", "partitioning"),
    ("debootstrap", "base system"),
    ("base-installer", "base system"),
    ("apt-setup", "apt setup"),
    ("pkgsel", "packages"),
    ("tasksel", "packages"),
    ("in-target", "packages"),
    ("grub-installer", "boot loader"),
    ("finish-install", "finish"),
)

STAGE_ORDER = (
    "language",
    "keyboard",
    "preseed",
    "hardware detection",
    "network",
    "mirror",
    "retrieving installer components",
    "users",
    "clock",
    "disks",
    "partitioning",
    "base system",
    "apt setup",
    "packages",
    "boot loader",
    "finish",
)

def _rank(stage: str) -> int:
    return STAGE_ORDER.index(stage) if stage in STAGE_ORDER else -1


_MENU = re.compile(r"Menu item '([^']+)' selected")
_FETCHED = re.compile(r"URL:(\S+) \[(\d+)(?:/(\d+))?\]")
_INPUT = re.compile(r"^--> INPUT (\S+) (\S+)")
_ERROR = re.compile(
    r"(\berror\b|\bERROR\b|BAD signature|failed with error code|Failed to|failed to|cannot|Cannot|"
    r"Not Found|No such file)"
)
_NOT_ERRORS = re.compile(r"(no error|error_|/error\b|errors=|ignore errors)")


@dataclass(frozen=True)
class SyslogMessage:
    pri: int
    tag: str
    pid: int | None
    text: str
    stamp: str = ""

    @property
    def severity(self) -> int:
        return self.pri & 7

    def line(self) -> str:
        pid = f"[{self.pid}]" if self.pid is not None else ""
        return f"{self.tag}{pid}: {self.text}"


@dataclass(frozen=True)
class InstallerEvent:
    kind: EventKind
    stage: str  # the stage current when the event happened
    text: str
    at: float  # time.monotonic() on arrival
    question: str = ""  # prompts: the debconf question
    url: str = ""  # fetches: the URL


def parse_syslog(datagram: bytes) -> SyslogMessage | None:
    """One syslog datagram, or None when it is not in the expected format."""
    text = datagram.decode("utf-8", "replace").rstrip("\r\n\0")
    match = _SYSLOG.match(text)
    if not match:
        return None
    pid = match.group("pid")
    return SyslogMessage(
        pri=int(match.group("pri")),
        tag=match.group("tag"),
        pid=int(pid) if pid else None,
        text=match.group("text"),
        stamp=match.group("stamp") or "",
    )


class InstallerTracker:
    """Turns syslog messages into events. Pure state machine: feed messages, read events."""

    def __init__(self) -> None:
        self.stage = ""
        self._pending_input: tuple[str, str] | None = None  # (priority, question)

    def _set_stage(self, stage: str, now: float, text: str) -> list[InstallerEvent]:
        if stage and stage != self.stage:
            self.stage = stage
            return [InstallerEvent("stage", stage, text, now)]
        return []

    def feed(self, msg: SyslogMessage, now: float | None = None) -> list[InstallerEvent]:
        now = time.monotonic() if now is None else now
        events: list[InstallerEvent] = []
        text = msg.text
        if msg.tag == "debconf":
            m = _INPUT.match(text)
            if m:
                self._pending_input = (m.group(1), m.group(2))
            elif text.startswith("<-- 0 question will be asked") and self._pending_input:
                prio, question = self._pending_input
                events.append(
                    InstallerEvent("prompt", self.stage, f"the installer asks {question} ({prio})", now, question=question)
                )
                self._pending_input = None
            elif text.startswith("<-- 30 question skipped"):
                self._pending_input = None
            return events
        menu = _MENU.search(text)
        if menu and msg.tag.startswith("main-menu"):
            events += self._set_stage(MENU_STAGES.get(menu.group(1), menu.group(1)), now, text)
        else:
            # A program's own messages only move the stage forward (helpers such as anna-install log
            # from inside other steps).
            tag = msg.tag + ("[" if msg.pid is not None else "")
            for prefix, stage in TAG_STAGES:
                if tag.startswith(prefix) and _rank(stage) > _rank(self.stage):
                    events += self._set_stage(stage, now, text)
                    break
        fetched = _FETCHED.search(text)
        if fetched:
            events.append(InstallerEvent("fetched", self.stage, text, now, url=fetched.group(1)))
        elif (msg.severity <= 3 or _ERROR.search(text)) and not _NOT_ERRORS.search(text):
            events.append(InstallerEvent("error", self.stage, f"{msg.tag}: {text}", now))
        else:
            events.append(InstallerEvent("message", self.stage, f"{msg.tag}: {text}", now))
        return events


# Newt (cdebconf's text frontend) prints this help line under every interactive dialog.
NEWT_DIALOG_MARKER = b"<Tab> moves; <Space> selects; <Enter> activates buttons"


def serial_shows_dialog(serial_bytes: bytes) -> bool:
    """True when a serial console capture shows an interactive installer dialog (a prompt)."""
    return NEWT_DIALOG_MARKER in serial_bytes


class InstallerLog:
    """A loopback UDP syslog listener for the installer. Use as a context manager; the socket always closes.

    ``port=0`` picks a free port (read ``.port`` and put it on the kernel line).
    """

    def __init__(
        self,
        port: int = 0,
        *,
        host: str = "127.0.0.1",
        progress: Progress = NullProgress(),
        raw_log: Path | None = None,
        keep: int = 20000,
    ) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ImgbuildError("the installer log listener binds loopback only")
        self._requested = (host, port)
        self.progress = progress
        self.raw_log = raw_log
        self.tracker = InstallerTracker()
        self._events: deque[InstallerEvent] = deque(maxlen=keep)
        self._lines: deque[str] = deque(maxlen=keep)
        self._all_events: list[InstallerEvent] = []  # stages, errors, prompts, fetches (small)
        self._cond = threading.Condition()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._raw: IO[str] | None = None
        self.port = port

    # -- lifetime --
    def __enter__(self) -> InstallerLog:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def start(self) -> None:
        family = socket.AF_INET6 if ":" in self._requested[0] else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.bind(self._requested)
        except OSError as exc:
            sock.close()
            raise ImgbuildError(
                f"cannot listen for the installer's syslog on {self._requested[0]}:{self._requested[1]}: {exc}"
            ) from exc
        sock.settimeout(0.2)
        self._sock = sock
        self.port = sock.getsockname()[1]
        if self.raw_log is not None:
            self.raw_log.parent.mkdir(parents=True, exist_ok=True)
            self._raw = open(self.raw_log, "a", encoding="utf-8")
        self._thread = threading.Thread(target=self._run, name="installer-syslog", daemon=True)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._raw is not None:
            self._raw.close()
            self._raw = None
        with self._cond:
            self._cond.notify_all()

    def _run(self) -> None:
        assert self._sock is not None
        while not self._stop.is_set():
            try:
                data, _addr = self._sock.recvfrom(65535)
            except TimeoutError:
                continue
            except OSError:
                return
            self.feed(data)

    # -- input (also used by tests with recorded datagrams) --
    def feed(self, datagram: bytes) -> list[InstallerEvent]:
        msg = parse_syslog(datagram)
        if msg is None:
            return []
        events = self.tracker.feed(msg)
        with self._cond:
            self._lines.append(msg.line())
            if self._raw is not None:
                self._raw.write(redact(msg.line()) + "\n")
                self._raw.flush()
            for event in events:
                self._events.append(event)
                if event.kind != "message":
                    self._all_events.append(event)
            self._cond.notify_all()
        for event in events:
            if event.kind == "stage":
                self.progress.step(f"installer: {event.stage}")
            elif event.kind == "error":
                self.progress.note(f"installer error ({event.stage or 'starting'}): {event.text[:200]}")
            elif event.kind == "prompt":
                self.progress.note(f"installer prompt ({event.stage}): {event.text}")
        return events

    # -- queries --
    @property
    def stage(self) -> str:
        return self.tracker.stage

    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def events(self, kind: EventKind | None = None) -> list[InstallerEvent]:
        with self._cond:
            return [e for e in self._all_events if kind is None or e.kind == kind]

    def stages(self) -> list[str]:
        return [e.stage for e in self.events("stage")]

    def prompts(self) -> list[InstallerEvent]:
        return self.events("prompt")

    def errors(self) -> list[InstallerEvent]:
        return self.events("error")

    def wait_for(self, condition: Callable[[InstallerLog], bool], timeout: float) -> bool:
        """Block until *condition(self)* holds (re-checked on every message) or *timeout* passes."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                if condition(self):
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._sock is None:
                    return condition(self)
                self._cond.wait(min(remaining, 1.0))
