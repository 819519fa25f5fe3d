"""The desktop check's question to the guest: the recipe's session on the console, or only a greeter?

The probe runs for real here (sh, loginctl, pgrep; this host has no logind, so no sessions); the verdicts on
logind's answers are checked on the lines a trixie guest prints (seen in the lxde-desktop boot tests, which
run the same probe against real guests on both targets).
"""

from __future__ import annotations

import subprocess

from builder.recipe.tasks import SESSIONS
from builder.verify.desktop import probe_command, session_state

LXDE = SESSIONS["lxde-desktop"]
SESSION = "session Name=admin Class=user Type=x11 Seat=seat0 Active=yes State=active "
GREETER = "session Name=lightdm Class=greeter Type=x11 Seat=seat0 Active=yes State=active "
SSH = "session Name=admin Class=user Type=tty Seat= Active=yes State=active "


def test_the_probe_is_valid_shell_and_runs_without_logind() -> None:
    command = probe_command("admin", LXDE)
    proc = subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1].startswith("panel")
    state = session_state(proc.stdout, "admin", LXDE)
    assert not state.ok and state.seen == "sessions: none; lxpanel not running"


def test_a_user_name_cannot_reach_the_shell() -> None:
    command = probe_command("a;touch /tmp/x", LXDE)
    assert "-u 'a;touch /tmp/x'" in command


def test_the_users_session_with_its_panel_and_no_greeter() -> None:
    state = session_state(f"{SSH}\n{SESSION}\npanel 1234 \n", "admin", LXDE)
    assert state.ok
    assert state.seen == ("sessions: admin user tty on no seat active; admin user x11 on seat0 active; "
                          "lxpanel running (pid 1234)")


def test_not_proven() -> None:
    assert not session_state(f"{GREETER}\npanel \n", "admin", LXDE).ok  # the greeter waits for a login
    assert not session_state(f"{SESSION}\npanel \n", "admin", LXDE).ok  # session starting, no panel yet
    assert not session_state(f"{SESSION}\n{GREETER}\npanel 9\n", "admin", LXDE).ok  # a greeter too
    assert not session_state(f"{SSH}\npanel 9\n", "admin", LXDE).ok  # only the check's own SSH login
    other = SESSION.replace("Name=admin", "Name=eve")
    assert not session_state(f"{other}\npanel 9\n", "admin", LXDE).ok  # someone else's session
    inactive = SESSION.replace("Active=yes", "Active=no")
    assert not session_state(f"{inactive}\npanel 9\n", "admin", LXDE).ok
