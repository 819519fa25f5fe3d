"""The one user-facing error type, mapped to an exit code at the top of the CLI."""

from __future__ import annotations


class ImgbuildError(Exception):
    """A failure the user can act on. Printed as one line (plus optional detail), never a traceback.

    exit_code: 1 for operational failures, 2 for invalid input (recipes, arguments).
    detail: extra lines shown under the message (a command's stderr tail, a task log ...).
    """

    exit_code = 1

    def __init__(self, message: str, *, detail: str = "", exit_code: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        if exit_code is not None:
            self.exit_code = exit_code

    def __str__(self) -> str:
        return self.message


class InvalidInput(ImgbuildError):
    """Bad recipe or bad arguments: exit status 2."""

    exit_code = 2


class CommandFailed(ImgbuildError):
    """An external command exited non-zero."""


class CheckFailed(ImgbuildError):
    """A verification check failed (the VM exists but does not do what the recipe asks)."""


class GuestCrashed(ImgbuildError):
    """The guest's kernel panicked (seen on its console): waiting longer cannot help."""


class Terminated(KeyboardInterrupt):
    """SIGTERM (systemd stopping a unit, CI cancelling a job, kill): raised by the handler the CLI installs,
    so every cleanup that runs on Ctrl-C (``except KeyboardInterrupt``, ``finally``) runs on SIGTERM too.
    The CLI exits 143 (128 + SIGTERM) after it, 130 after Ctrl-C."""
