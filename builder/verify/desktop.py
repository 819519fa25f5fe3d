"""What the desktop check asks the guest over SSH: is the recipe's session on the console, or only a greeter?

With ``desktop.autologin`` the display manager starts the user's session at boot. The proof is systemd-logind's
view of the console plus the session's own panel process: a session of that user, class ``user``, graphical,
active on ``seat0``; the panel (e.g. ``lxpanel``) running as that user; and no ``greeter`` session anywhere.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass

from builder.recipe.tasks import Session


def probe_command(user: str, session: Session) -> str:
    """A POSIX shell command printing one ``session K=V ...`` line per logind session and one ``panel PID ...``
    line (any user may run it: loginctl and pgrep need no privilege)."""
    props = " ".join(f"-p {p}" for p in ("Name", "Class", "Type", "Seat", "Active", "State"))
    return ("loginctl list-sessions --no-legend 2>/dev/null | while read -r id rest; do "
            f"echo \"session $(loginctl show-session \"$id\" {props} 2>/dev/null | tr '\\n' ' ')\"; done; "
            f"echo \"panel $(pgrep -u {shlex.quote(user)} -x {shlex.quote(session.panel)} | tr '\\n' ' ')\"")


@dataclass(frozen=True)
class SessionState:
    ok: bool
    seen: str  # what the guest showed, for the report


def session_state(output: str, user: str, session: Session) -> SessionState:
    """Judge the probe's *output*: the user's graphical session active on seat0 with its panel, and no greeter."""
    sessions: list[dict[str, str]] = []
    panel_pids: list[str] = []
    for line in output.splitlines():
        kind, _, rest = line.partition(" ")
        if kind == "session":
            sessions.append(dict(word.split("=", 1) for word in rest.split() if "=" in word))
        elif kind == "panel":
            panel_pids = rest.split()
    mine = [s for s in sessions if s.get("Name") == user and s.get("Class") == "user"
            and s.get("Type") in ("x11", "wayland") and s.get("Seat") == "seat0" and s.get("Active") == "yes"]
    greeters = [s for s in sessions if s.get("Class") == "greeter"]
    shown = "; ".join(
        f"{s.get('Name', '?')} {s.get('Class', '?')} {s.get('Type', '?')} on {s.get('Seat') or 'no seat'} "
        f"{'active' if s.get('Active') == 'yes' else 'inactive'}" for s in sessions) or "none"
    panel = f"{session.panel} running (pid {', '.join(panel_pids)})" if panel_pids else f"{session.panel} not running"
    seen = f"sessions: {shown}; {panel}"
    return SessionState(ok=bool(mine) and bool(panel_pids) and not greeters, seen=seen)
