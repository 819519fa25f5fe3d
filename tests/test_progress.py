"""The console progress: notes after the last stage show a zero timer, not a negative one."""

from __future__ import annotations

import io

from builder.progress import ConsoleProgress


def test_a_note_outside_any_stage_shows_zero_seconds() -> None:
    out = io.StringIO()
    progress = ConsoleProgress(out, live=False)
    progress.begin_stage("verify")
    progress.end_stage(True)
    for _ in range(200):
        progress.step("shutting the VM down")
    lines = [line for line in out.getvalue().splitlines() if "shutting" in line]
    assert len(lines) == 200 and all(line == "    [   0.0s] shutting the VM down" for line in lines), lines[:3]
