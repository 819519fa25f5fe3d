"""Ctrl-C must reach imgbuild: no blocked SIGINT or SIGTERM may outlive the code that blocks them, and a
block inherited from whoever started imgbuild is lifted (exec keeps the signal mask; CI once hung on a
`make` whose test worker had been left with SIGINT blocked)."""

from __future__ import annotations

import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from builder import fsutil

HELD = {signal.SIGINT, signal.SIGTERM}


def blocked() -> set[signal.Signals]:
    return signal.pthread_sigmask(signal.SIG_BLOCK, set()) & HELD


def test_an_interrupt_as_the_block_takes_effect_leaves_nothing_blocked(monkeypatch: pytest.MonkeyPatch,
                                                                       tmp_path: Path) -> None:
    real = signal.pthread_sigmask

    def interrupted_on_return(how: int, mask: set[int]) -> set[signal.Signals]:
        previous = real(how, mask)
        if how == signal.SIG_BLOCK and signal.SIGINT in mask:
            raise KeyboardInterrupt  # what Python does when a pending Ctrl-C's handler runs right after the call
        return previous

    monkeypatch.setattr(fsutil.signal, "pthread_sigmask", interrupted_on_return)
    with pytest.raises(KeyboardInterrupt):
        fsutil.write_atomic(tmp_path / "f", "data")
    monkeypatch.undo()
    assert blocked() == set()
    assert list(tmp_path.iterdir()) == []


def test_signals_held_by_the_block_arrive_when_it_ends() -> None:
    reached = []
    with pytest.raises(KeyboardInterrupt), fsutil.held_signals():
        signal.raise_signal(signal.SIGINT)  # held: the block goes on
        reached.append("end of block")
    assert reached == ["end of block"] and blocked() == set()


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_imgbuild_started_with_the_signals_blocked_still_stops_on_them(sig: signal.Signals, code: int) -> None:
    program = textwrap.dedent(f"""
        import os, signal, sys, time
        from builder.cli import main as cli
        from builder.errors import Terminated
        signal.pthread_sigmask(signal.SIG_BLOCK, {{signal.SIGINT, signal.SIGTERM}})  # as inherited
        try:
            with cli.terminated_on_sigterm():
                os.kill(os.getpid(), {int(sig)})
                time.sleep(30)
        except Terminated:
            sys.exit(143)
        except KeyboardInterrupt:
            sys.exit(130)
        sys.exit(0)
    """)
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=20)
    assert done.returncode == code, done.stderr
