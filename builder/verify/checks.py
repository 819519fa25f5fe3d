"""The recipe's checks, run against a booted VM through its target. Each reports what it expected and saw."""

from __future__ import annotations

import html
import json
import re
import shlex
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import paramiko
import requests

from builder.errors import ImgbuildError
from builder.progress import NullProgress, Progress
from builder.recipe.model import Check, Recipe
from builder.recipe.tasks import Session
from builder.targets.base import VM, Target
from builder.verify.desktop import SessionState, probe_command, session_state
from builder.verify.pngcheck import changed_share, decode_png, inspect_raster
from builder.verify.ssh import GuestShell, HostKeyMismatch

# Two screenshots 3 s apart that differ in fewer pixels than this share show a desktop that has finished painting
# (LXDE's panel has a clock and a CPU graph: about 0.1% of a 1024x768 screen).
SETTLED_CHANGE = 0.01

# What `cloud-init status --wait` reads, read directly: the cloud-init CLI is a Python program whose start-up
# alone takes 3 s and more under TCG (twice, for --wait and then the status line). cloud-init's generator
# creates /run/cloud-init/enabled when cloud-init is to run on this boot (no NoCloud seed on a later boot:
# disabled, as /etc/cloud/cloud-init.disabled also says); the final stage writes result.json, with every
# stage's errors, as its last act (cloudinit/cmd/main.py, status_wrapper; cloudinit/cmd/status.py reads the
# same files).
CLOUD_INIT_RESULT = (
    "while :; do "
    "if [ -e /etc/cloud/cloud-init.disabled ] || [ ! -e /run/cloud-init/enabled ]; then echo disabled; exit 0; fi; "
    "if [ -s /run/cloud-init/result.json ]; then cat /run/cloud-init/result.json; exit 0; fi; "
    "sleep 0.5; done"
)


def cloud_init_status(output: str) -> str:
    """The first line `cloud-init status` would print, from CLOUD_INIT_RESULT's output (errors named)."""
    text = output.strip()
    if text == "disabled":
        return "status: disabled"
    try:
        errors = json.loads(text)["v1"]["errors"]
    except (ValueError, KeyError, TypeError):
        return f"status unknown (result.json: {text[:200]!r})"
    if not isinstance(errors, list):
        return f"status unknown (result.json errors: {errors!r})"
    return "status: done" if not errors else f"status: error ({'; '.join(map(str, errors))[:500]})"


@dataclass
class Outcome:
    check: str
    ok: bool
    expected: str
    seen: str
    seconds: float = 0.0

    def as_dict(self) -> dict:
        return asdict(self)

    def line(self) -> str:
        mark = "PASS" if self.ok else "FAIL"
        return f"{mark} {self.check}: expected {self.expected}; saw {self.seen}"


@dataclass
class GuestAccess:
    """What a check needs to reach the guest."""

    target: Target
    vm: VM
    address: str
    user: str
    known_hosts: Path
    key_file: Path | None
    screenshot: Path


def _page_summary(body: str) -> str:
    """A page as a person would name it: its <title>, else its first words."""
    match = re.search(r"<title[^>]*>(.*?)</title>", body, re.IGNORECASE | re.DOTALL)
    if match and match.group(1).strip():
        return f"{len(body)} bytes, title {_clip(html.unescape(match.group(1)), 120)!r}"
    return f"{len(body)} bytes, starting {_clip(re.sub(r'<[^>]+>', ' ', body), 120)!r}"


def _clip(text: str, n: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


class CheckRunner:
    def __init__(self, recipe: Recipe, access: GuestAccess, progress: Progress = NullProgress()) -> None:
        self.recipe = recipe
        self.access = access
        self.progress = progress
        self.shell: GuestShell | None = None
        self.ssh_error: str | None = None
        self.cloud_init_pending: Check | None = None  # set by check_ssh: its cloud-init part is still to do

    # -- helpers -------------------------------------------------------------------------------
    def _shell(self, timeout: float) -> GuestShell:
        if self.shell is None and self.ssh_error is None:
            a = self.access
            shell = GuestShell(a.target.endpoint(a.vm, a.address, 22), a.user, a.known_hosts, a.key_file)
            try:
                shell.connect(timeout)
                self.shell = shell
            except HostKeyMismatch as exc:
                self.ssh_error = f"{exc.message} ({exc.detail})"
            except ImgbuildError as exc:
                self.ssh_error = f"{exc.message} ({exc.detail})" if exc.detail else exc.message
        if self.shell is None:
            raise ImgbuildError(self.ssh_error or "SSH unavailable")
        return self.shell

    def close(self) -> None:
        if self.shell:
            self.shell.close()

    # -- checks --------------------------------------------------------------------------------
    def run_all(self) -> list[Outcome]:
        """Every check of the recipe, each as soon as it can pass: the ssh check's wait for cloud-init to
        finish comes last, after the checks that only need their own service."""
        outcomes = []
        pending: tuple[Outcome, Check] | None = None
        try:
            for check in self.recipe.verify:
                self.progress.step(f"check {check.label}")
                start = time.monotonic()
                self.cloud_init_pending = None
                outcome = getattr(self, f"check_{check.check}")(check)
                outcome.seconds = round(time.monotonic() - start, 2)
                if self.cloud_init_pending is not None:
                    pending = (outcome, self.cloud_init_pending)
                else:
                    self.progress.note(outcome.line())
                outcomes.append(outcome)
            if pending is not None:
                self.progress.step("check ssh: waiting for cloud-init to finish")
                self.finish_cloud_init(*pending)
                self.progress.note(pending[0].line())
        finally:
            self.close()
        return outcomes

    def check_ssh(self, check: Check) -> Outcome:
        """Log in with the pinned host key and read the host name and addresses as soon as SSH answers: the
        key, the user and the host name come from cloud-init's first stage, so a login proves them. That
        cloud-init also finished is confirmed after the other checks have run (finish_cloud_init), so they
        need not wait for it; a recipe with late commands waits for cloud-init first, since its commands may
        change what the other checks look at."""
        r = self.recipe
        want_addr = r.network.ip or self.access.address
        expected = (f"login as {self.access.user} with the pinned host key, hostname {r.hostname}, "
                    f"address {r.network.address or want_addr}, cloud-init done (or disabled on a later boot)")
        try:
            shell = self._shell(check.timeout)
        except ImgbuildError as exc:
            return Outcome("ssh", False, expected, exc.message)
        hostname = shell.run("hostname").stdout.strip()
        addrs = shell.run("ip -o -4 addr show scope global | awk '{print $4}'").stdout.split()
        ips = [a.split("/")[0] for a in addrs]
        seen = f"hostname {hostname or '?'}, addresses {', '.join(addrs) or 'none'}"
        ok = hostname == r.hostname and want_addr in ips
        if r.network.address:
            ok = ok and r.network.address in addrs
        outcome = Outcome("ssh", ok, expected, seen)
        if r.late_commands:
            self.finish_cloud_init(outcome, check)
        else:
            self.cloud_init_pending = check
        return outcome

    def finish_cloud_init(self, outcome: Outcome, check: Check) -> None:
        """Complete the ssh check: wait for cloud-init to finish and require that it did without error
        ("disabled": a later boot without the seed ISO, where cloud-init rightly does nothing)."""
        start = time.monotonic()
        try:
            shell = self._shell(check.timeout)
            status = cloud_init_status(shell.run(CLOUD_INIT_RESULT, timeout=check.timeout).stdout)
        except (ImgbuildError, OSError, paramiko.SSHException) as exc:
            status = f"unknown ({exc})"
        outcome.seen += f", cloud-init {status or 'status unknown'}"
        outcome.ok = outcome.ok and status in ("status: done", "status: disabled")
        outcome.seconds = round(outcome.seconds + time.monotonic() - start, 2)

    def check_service(self, check: Check) -> Outcome:
        name = check.name or ""
        expected = f"systemd unit {name} active"
        return self._service(f"service {name}", name, expected, check.timeout)

    def _service(self, label: str, unit: str, expected: str, timeout: float) -> Outcome:
        try:
            shell = self._shell(timeout)
        except ImgbuildError as exc:
            return Outcome(label, False, expected, f"no SSH session: {exc.message}")
        deadline = time.monotonic() + timeout
        while True:
            result = shell.run(f"systemctl is-active {shlex.quote(unit)}")
            state = result.stdout.strip() or result.stderr.strip()
            if state == "active":
                return Outcome(label, True, expected, f"{unit} is active")
            if time.monotonic() >= deadline:
                return Outcome(label, False, expected, f"{unit} is {state or 'unknown'}")
            time.sleep(3)

    def check_http(self, check: Check) -> Outcome:
        a = self.access
        ep = a.target.endpoint(a.vm, a.address, check.port)
        url = f"http://{ep.host}:{ep.port}{check.path}"
        shown = f"http://{a.address}:{check.port}{check.path}"
        expected = f"HTTP {check.status} from {shown}" + (f" containing {check.expect!r}" if check.expect else "")
        deadline = time.monotonic() + check.timeout
        seen = "no answer"
        while True:
            try:
                resp = requests.get(url, timeout=10, allow_redirects=False)
                body = resp.text
                found = check.expect is None or check.expect in body
                if resp.status_code == check.status and found:
                    return Outcome(check.label, True, expected, f"HTTP {resp.status_code}, text found")
                seen = f"HTTP {resp.status_code}, {_page_summary(body)}"
                if resp.status_code == check.status and not found:
                    return Outcome(check.label, False, expected, seen)  # a page, but the wrong one: no retry
            except requests.RequestException as exc:
                seen = f"{type(exc).__name__}: {_clip(str(exc), 160)}"
            if time.monotonic() >= deadline:
                return Outcome(check.label, False, expected, seen)
            time.sleep(3)

    def check_desktop(self, check: Check) -> Outcome:
        """The display manager active; with ``desktop.autologin`` the user's session itself (logind and its panel,
        no greeter); then a screenshot of the console that is not blank and has stopped changing."""
        dm = self.recipe.display_manager
        desktop = self.recipe.desktop
        shot = self.access.screenshot
        if desktop.autologin and desktop.session:
            expected = (f"{dm} active; {desktop.autologin}'s {desktop.session.name} session active on the console "
                        f"with {desktop.session.panel} running and no greeter; a non-blank screenshot at {shot}")
        else:
            expected = f"{dm} active and a non-blank screenshot (the greeter: no desktop.autologin) at {shot}"
        deadline = time.monotonic() + check.timeout
        service = self._service("desktop", dm, expected, check.timeout)
        if not service.ok:
            return service
        proof = ""
        if desktop.autologin and desktop.session:
            state = self._wait_for_session(desktop.autologin, desktop.session, deadline)
            if not state.ok:
                return Outcome("desktop", False, expected, f"{dm} active; {state.seen}")
            proof = f"; {state.seen}"
        seen, ok = self._settled_screenshot(deadline)
        if ok and desktop.autologin and desktop.session:
            state = self._wait_for_session(desktop.autologin, desktop.session, time.monotonic())  # still there?
            ok, proof = state.ok, f"; {state.seen} (after the screenshot)"
        return Outcome("desktop", ok, expected, f"{dm} active{proof}; {seen}")

    def _wait_for_session(self, user: str, session: Session, deadline: float) -> SessionState:
        shell = self._shell(max(1.0, deadline - time.monotonic()))
        command = probe_command(user, session)
        while True:
            state = session_state(shell.run(command).stdout, user, session)
            if state.ok or time.monotonic() >= deadline:
                return state
            time.sleep(3)

    def _settled_screenshot(self, deadline: float) -> tuple[str, bool]:
        """Screenshots until one is not blank and nearly the same as the one before it (the desktop has finished
        painting; a panel's clock or CPU graph may still tick), or the deadline passes: then a non-blank one
        still counts. (what was seen, ok)."""
        a = self.access
        seen, previous, ok = "no screenshot", None, False
        while True:
            try:
                raster = decode_png(a.target.screenshot(a.vm, a.screenshot).read_bytes())
                info = inspect_raster(raster)
                ok = not info.blank
                seen = f"screenshot {info.width}x{info.height}, {info.colours} colours sampled"
                if ok and previous is not None and changed_share(previous, raster) < SETTLED_CHANGE:
                    return seen, True
                previous = raster
            except (ImgbuildError, ValueError, OSError) as exc:
                seen, ok = f"screenshot failed: {exc}", False
            if time.monotonic() >= deadline:
                return (seen + " (still changing)" if ok else seen), ok
            time.sleep(3)
