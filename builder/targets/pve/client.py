"""The one adapter between imgbuild and the Proxmox VE API. proxmoxer is used here and nowhere else.

proxmoxer is a thin, dynamic client with silent failure modes; this module turns each into a clear
ImgbuildError:

- HTTP errors carry PVE's message (the reason phrase) and the per-parameter ``errors`` body;
- 401 is "authentication failed for token user@realm!name" (the secret never appears anywhere);
- TLS failures (unknown CA, pinned fingerprint mismatch) say so, with what to check;
- idempotent GETs are retried with backoff on 5xx answers and dropped connections;
- every task (UPID) is awaited: a task still running at its deadline is stopped and reported with
  its UPID; a task that ended with an ``exitstatus`` other than OK raises with PVE's message and the
  tail of the task log (proxmoxer's own helper returns None on timeout and never raises).

Booleans are sent as 0/1 (PVE refuses "True"); None values are dropped.
"""

from __future__ import annotations

import logging
import socket
import ssl
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import requests
import urllib3
from proxmoxer import ProxmoxAPI
from proxmoxer.core import ResourceException

from builder.errors import ImgbuildError
from builder.targets.pve.config import PveConfig
from builder.targets.pve.tls import PinningAdapter, TlsPolicy, TransferAdapter, connect_verified

log = logging.getLogger(__name__)

API_TIMEOUT = (10.0, 60.0)  # (connect, read) for ordinary API calls
GET_ATTEMPTS = 4
GET_BACKOFF = (0.5, 1.0, 2.0)
TASK_LOG_TAIL = 20


class PveError(ImgbuildError):
    """A failed API call. *status*: HTTP status (0: no answer); *reason*: PVE's message; *errors*: per field."""

    def __init__(self, message: str, *, status: int = 0, reason: str = "", errors: Mapping[str, str] | None = None,
                 detail: str = "", transient: bool = False) -> None:
        super().__init__(message, detail=detail)
        self.status = status
        self.reason = reason
        self.errors = dict(errors or {})
        self.transient = transient  # worth retrying (5xx, dropped connection); never for TLS or auth


class PveAuthError(PveError):
    pass


class PveTaskError(PveError):
    """A task that failed (``exitstatus`` not OK) or outlived its deadline."""

    def __init__(self, message: str, *, upid: str, exitstatus: str | None, detail: str = "") -> None:
        super().__init__(message, reason=exitstatus or "", detail=detail)
        self.upid = upid
        self.exitstatus = exitstatus


class PveTaskTimeout(PveTaskError):
    pass


@dataclass(frozen=True)
class TaskResult:
    upid: str
    exitstatus: str  # "OK" or "WARNINGS: n"


def encode_params(params: Mapping[str, Any]) -> dict[str, Any]:
    """PVE's wire form: booleans as 0/1, None dropped, everything else as given."""
    out: dict[str, Any] = {}
    for key, value in params.items():
        if value is None:
            continue
        out[key] = int(value) if isinstance(value, bool) else value
    return out


def upid_node(upid: str) -> str:
    """The node field of ``UPID:node:PID:PSTART:STARTTIME:type:id:user:``."""
    parts = upid.split(":")
    if len(parts) < 9 or parts[0] != "UPID":
        raise PveError(f"Proxmox VE answered with something that is not a task id: {upid!r}")
    return parts[1]


def is_upid(value: Any) -> bool:
    return isinstance(value, str) and value.startswith("UPID:")


def _errors_text(errors: Mapping[str, Any]) -> str:
    lines = []
    for key, msg in errors.items():
        text = " ".join(str(msg).split())
        lines.append(f"{key}: {text}")
    return "\n".join(lines)


class PveClient:
    """Calls to one PVE API endpoint with one API token. Paths are below ``/api2/json`` (``/nodes/pve/...``)."""

    def __init__(self, config: PveConfig, *, insecure: bool = False,
                 sleep: Callable[[float], None] = time.sleep) -> None:
        self.config = config
        self.tls = TlsPolicy.choose(ca_file=config.ca_file, fingerprint=config.fingerprint, insecure=insecure)
        self.api_url = f"{config.url}/api2/json"
        self._sleep = sleep
        prefix = config.url.split("/", 3)[3] if config.url.count("/") > 2 else None
        self._api = ProxmoxAPI(
            f"{config.host if ':' not in config.host else '[' + config.host + ']'}:{config.port}",
            backend="https", user=config.user, token_name=config.token_name, token_value=config.token_secret,
            verify_ssl=self.tls.verify, timeout=API_TIMEOUT, path_prefix=prefix or None,
        )
        session: requests.Session = self._api._store["session"]
        session.mount("https://", PinningAdapter(self.tls.fingerprint))
        session.headers["User-Agent"] = "imgbuild"

    # --- plain calls -----------------------------------------------------------------------------
    def get(self, path: str, /, *, retry: bool = True, **params: Any) -> Any:
        attempts = GET_ATTEMPTS if retry else 1
        for attempt in range(attempts):
            try:
                return self._call("GET", path, params)
            except PveError as exc:
                if not exc.transient or attempt == attempts - 1:
                    raise
                delay = GET_BACKOFF[min(attempt, len(GET_BACKOFF) - 1)]
                log.debug("GET %s: %s; retrying in %.1fs", path, exc.message, delay)
                self._sleep(delay)
        raise AssertionError("unreachable")

    def post(self, path: str, /, **data: Any) -> Any:
        return self._call("POST", path, data)

    def put(self, path: str, /, **data: Any) -> Any:
        return self._call("PUT", path, data)

    def delete(self, path: str, /, **params: Any) -> Any:
        return self._call("DELETE", path, params)

    def _resource(self, path: str) -> Any:
        segments = [s for s in path.strip("/").split("/") if s]
        return self._api(segments)

    def _call(self, method: str, path: str, params: Mapping[str, Any]) -> Any:
        resource = self._resource(path)
        fn = getattr(resource, method.lower())
        try:
            return fn(**encode_params(params))
        except ResourceException as exc:
            errors = exc.errors if isinstance(exc.errors, dict) else {}
            if not all(isinstance(v, str) for v in errors.values()):
                errors = {}
            raise self.http_error(method, path, exc.status_code, str(exc.content or ""), errors) from None
        except requests.exceptions.RequestException as exc:
            raise self.transport_error(method, path, exc) from None

    # --- error translation (also used by uploads) -------------------------------------------------
    def http_error(self, method: str, path: str, status: int, reason: str, errors: Mapping[str, str]) -> PveError:
        shown = _shown_path(path)
        if status == 401:
            return PveAuthError(
                f"authentication failed for token {self.config.token_id} at {self.config.url}",
                status=401, reason=reason,
                detail="check the token id and its secret, that the token exists and has not expired "
                       f"(configured in {self.config.source})",
            )
        if status == 403:
            return PveError(f"Proxmox VE denied {method} {shown}: {reason or 'permission check failed'}",
                            status=403, reason=reason,
                            detail=f"the token {self.config.token_id} lacks a privilege for this call "
                                   "(privilege separation: grant the token itself the role)")
        if status == 400 and errors:
            return PveError(f"Proxmox VE refused {method} {shown}: {reason or 'bad request'}", status=400,
                            reason=reason, errors=errors, detail=_errors_text(errors))
        return PveError(f"Proxmox VE: {method} {shown} failed: {reason or 'HTTP ' + str(status)} (HTTP {status})",
                        status=status, reason=reason, errors=errors, detail=_errors_text(errors),
                        transient=status >= 500 and status != 501)

    def transport_error(self, method: str, path: str, exc: requests.exceptions.RequestException) -> PveError:
        url = self.config.url
        if isinstance(exc, requests.exceptions.SSLError) and _is_trust_failure(exc):
            text = str(exc)
            if "fingerprint" in text.lower():
                return PveError(f"TLS: the certificate of {url} does not match the pinned fingerprint; refusing "
                                "to talk to it", detail=f"pinned SHA-256 {self.tls.fingerprint} "
                                f"({self.config.source}). If the node's certificate was renewed, pin the new one.")
            return PveError(f"TLS: cannot verify the certificate of {url} ({self.tls.describe()})",
                            detail=_clip(text) + "\ngive the node's CA (ca_file / PROXMOX_CA_FILE) or pin its "
                                                 "certificate (fingerprint / PROXMOX_FINGERPRINT)")
        if isinstance(exc, requests.exceptions.Timeout):
            return PveError(f"Proxmox VE at {url} did not answer {method} {_shown_path(path)} in time",
                            detail=_clip(str(exc)), transient=True)
        return PveError(f"cannot reach Proxmox VE at {url}: {method} {_shown_path(path)} failed",
                        detail=_clip(str(exc)), transient=True)

    # --- tasks -------------------------------------------------------------------------------------
    def run(self, method: str, path: str, *, what: str, wait: float, **params: Any) -> TaskResult | None:
        """Call *path*; when PVE answers with a task id, wait up to *wait* seconds for the task and check
        how it ended. (*wait*, not ``timeout``: some PVE calls take a ``timeout`` parameter.)"""
        result = self._call(method, path, params)
        if is_upid(result):
            return self.wait_task(result, timeout=wait, what=what)
        return None

    def wait_task(self, upid: str, *, timeout: float, what: str,
                  on_poll: Callable[[float], None] | None = None) -> TaskResult:
        node = upid_node(upid)
        path = f"/nodes/{node}/tasks/{quote(upid, safe='')}/status"
        start = time.monotonic()
        interval = 0.1
        while True:
            status = self.get(path) or {}
            if status.get("status") == "stopped":
                exitstatus = str(status.get("exitstatus") or "")
                if exitstatus == "OK" or exitstatus.startswith("WARNINGS"):
                    if exitstatus != "OK":
                        log.info("%s finished with %s (task %s)", what, exitstatus, upid)
                    return TaskResult(upid, exitstatus)
                tail = self.task_log_tail(upid)
                raise PveTaskError(f"{what} failed on Proxmox VE: {exitstatus or 'no exit status'}", upid=upid,
                                   exitstatus=exitstatus or None, detail=f"task {upid}\n{tail}".rstrip())
            elapsed = time.monotonic() - start
            if elapsed >= timeout:
                stopped = self._stop_task(upid)
                tail = self.task_log_tail(upid)
                raise PveTaskTimeout(
                    f"{what} did not finish within {timeout:.0f}s (task {upid})", upid=upid, exitstatus=None,
                    detail=(f"the task was {'stopped' if stopped else 'asked to stop'}\n{tail}").rstrip(),
                )
            if on_poll is not None:
                on_poll(elapsed)
            self._sleep(min(interval, max(0.0, timeout - elapsed)))
            interval = min(interval * 1.5, 2.0)

    def _stop_task(self, upid: str, grace: float = 10.0) -> bool:
        """Stop a task that outlived its deadline, so it cannot finish later behind our back."""
        path = f"/nodes/{upid_node(upid)}/tasks/{quote(upid, safe='')}"
        try:
            self.delete(path)
        except PveError as exc:
            log.debug("stopping task %s: %s", upid, exc.message)
            return False
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline:
            try:
                if (self.get(f"{path}/status") or {}).get("status") == "stopped":
                    return True
            except PveError:
                return False
            self._sleep(0.2)
        return False

    def task_log_tail(self, upid: str, lines: int = TASK_LOG_TAIL) -> str:
        path = f"/nodes/{upid_node(upid)}/tasks/{quote(upid, safe='')}/log"
        try:
            entries = self.get(path, start=0, limit=5000) or []
        except PveError as exc:
            return f"(task log unavailable: {exc.message})"
        text = [str(e.get("t", "")) for e in entries if isinstance(e, dict)]
        if not text:
            return ""
        return "last lines of the task log:\n" + "\n".join(f"  {t}" for t in text[-lines:])

    # --- uploads (requests + requests-toolbelt; proxmoxer's 5 s timeout must not apply) --------------
    def transfer_session(self, *, write_timeout: float) -> requests.Session:
        """A session for one large request body: same TLS policy and token, generous write timeout."""
        session = requests.Session()
        session.verify = self.tls.verify  # callers pass verify= per request too: $REQUESTS_CA_BUNDLE beats this
        session.mount("https://", TransferAdapter(self.tls.fingerprint, write_timeout=write_timeout))
        session.auth = _TokenAuth(self.config.token_id, self.config.token_secret)
        session.headers["User-Agent"] = "imgbuild"
        return session

    def url(self, path: str) -> str:
        return f"{self.api_url}/{path.lstrip('/')}"

    # --- connections that leave HTTP (the console's WebSocket) ----------------------------------------
    def authorization(self) -> str:
        return token_authorization(self.config.token_id, self.config.token_secret)

    def tls_socket(self, path: str, *, timeout: float) -> socket.socket:
        """A TLS connection to the node for a request to *path* that upgrades to another protocol, verified
        exactly as this client's API calls are (same CA, $REQUESTS_CA_BUNDLE, pin or --insecure); failures
        become the same PveErrors."""
        # what requests does with a per-request verify= (proxmoxer's way): $REQUESTS_CA_BUNDLE replaces True
        verify = requests.Session().merge_environment_settings(self.config.url, {}, None, self.tls.verify,
                                                               None)["verify"]
        try:
            return connect_verified(self.config.host, self.config.port, verify=True if verify is None else verify,
                                    fingerprint=self.tls.fingerprint, timeout=timeout)
        except (ssl.SSLError, urllib3.exceptions.SSLError) as exc:
            raise self.transport_error("GET", path, requests.exceptions.SSLError(str(exc))) from None
        except urllib3.exceptions.NewConnectionError as exc:  # (a subclass of ConnectTimeoutError)
            raise self.transport_error("GET", path, requests.exceptions.ConnectionError(str(exc))) from None
        except (urllib3.exceptions.ConnectTimeoutError, TimeoutError) as exc:
            raise self.transport_error("GET", path, requests.exceptions.ConnectTimeout(str(exc))) from None
        except (urllib3.exceptions.HTTPError, OSError) as exc:
            raise self.transport_error("GET", path, requests.exceptions.ConnectionError(str(exc))) from None


def token_authorization(token_id: str, secret: str) -> str:
    """The Authorization header value of an API token (what proxmoxer sends)."""
    return f"PVEAPIToken={token_id}={secret}"


class _TokenAuth(requests.auth.AuthBase):
    def __init__(self, token_id: str, secret: str) -> None:
        self._header = token_authorization(token_id, secret)

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<PVE API token>"


def _is_trust_failure(exc: requests.exceptions.SSLError) -> bool:
    """A certificate that is not trusted (or not the pinned one), as opposed to a TLS stream broken mid-way
    (EOF, reset), which is a dropped connection like any other."""
    text = str(exc).lower()
    return any(word in text for word in ("certificate", "fingerprint", "wrong version number", "handshake",
                                         "unknown ca", "hostname"))


def _shown_path(path: str) -> str:
    return "/" + path.strip("/")


def _clip(text: str, n: int = 400) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 1] + "…"


def read_json_response(resp: requests.Response) -> tuple[Any, Mapping[str, str]]:
    """(data, errors) of a PVE JSON answer."""
    try:
        body = resp.json()
    except ValueError:
        return None, {}
    if not isinstance(body, dict):
        return None, {}
    errors = body.get("errors") if isinstance(body.get("errors"), dict) else {}
    return body.get("data"), {str(k): str(v) for k, v in (errors or {}).items()}


def volume_path(node: str, volid: str) -> str:
    storage = volid.split(":", 1)[0]
    return f"/nodes/{node}/storage/{storage}/content/{quote(volid, safe='')}"
