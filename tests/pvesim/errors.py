"""Error answers of the simulated API (pve-common's PVE::Exception, as pve-http-server sends them)."""

from __future__ import annotations


class ApiError(Exception):
    """An error answer: HTTP *status*, PVE's *message* (reason phrase) and optional *errors*."""

    def __init__(self, status: int, message: str, errors: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors


class ParamError(ApiError):
    """``raise_param_exc``: 400 Parameter verification failed. *probe*: a legitimate availability probe."""

    def __init__(self, errors: dict[str, str], *, probe: bool = False) -> None:
        super().__init__(400, "Parameter verification failed.", errors)
        self.probe = probe


def die(message: str) -> ApiError:
    return ApiError(500, message)
