"""Shared test configuration. Each area keeps its fixtures in its own tests/<area>/conftest.py.

Opt-in tests: one mechanism. Mark a test (or a module, with ``pytestmark``)
``@pytest.mark.optin("VARIABLE", "why it is opt-in")``; unless ``VARIABLE=1`` it is skipped with that
reason, so it shows in the ``-ra`` summary ("SKIPPED ... opt-in: set VARIABLE=1 ..."), never vanishes.
``when="unset"`` marks the complement: a test that runs only while VARIABLE is not 1 (it is replaced by
the opt-in one). The variables are listed in the README.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

# A suite started in the background by a non-interactive shell (`pytest ... &`, `(cmd &)`) inherits SIGINT
# ignored, and exec passes "ignored" on to every process a test starts: imgbuild then rightly keeps Ctrl-C
# ignored, as nohup'd programs do, and the Ctrl-C tests hang until their timeouts. Those tests are about
# what a user's Ctrl-C does, so the suite restores the disposition a terminal gives (this module is
# imported in every xdist worker, and children exec'd from a Python handler start with SIGINT default).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        for mark in item.iter_markers("optin"):
            variable, reason = mark.args
            wanted = mark.kwargs.get("when", "set")
            is_set = os.environ.get(variable) == "1"
            if wanted == "set" and not is_set:
                item.add_marker(pytest.mark.skip(reason=f"opt-in: set {variable}=1 to run ({reason})"))
            elif wanted == "unset" and is_set:
                item.add_marker(pytest.mark.skip(reason=f"{variable}=1: {reason}"))


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO


@pytest.fixture(autouse=True)
def _no_signals_left_blocked() -> Iterator[None]:
    """A test that leaves SIGINT or SIGTERM blocked in this worker's main thread would pass the block on to
    every process the worker starts later (exec keeps the signal mask): their Ctrl-C tests would hang."""
    yield
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, set()) & {signal.SIGINT, signal.SIGTERM}
    if blocked:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, blocked)
        pytest.fail(f"the test left {sorted(signal.Signals(s).name for s in blocked)} blocked", pytrace=False)
