"""tasksel tasks Debian ships, per release, and the packages behind them.

Each task maps to its ``task-*`` metapackage, except ``standard``, which tasksel installs by package
priority (the golden image builder uses mmdebstrap's ``standard`` variant for it).
"""

from __future__ import annotations

from dataclasses import dataclass

_COMMON = {
    "standard": None,
    "desktop": "task-desktop",
    "gnome-desktop": "task-gnome-desktop",
    "gnome-flashback-desktop": "task-gnome-flashback-desktop",
    "kde-desktop": "task-kde-desktop",
    "xfce-desktop": "task-xfce-desktop",
    "cinnamon-desktop": "task-cinnamon-desktop",
    "mate-desktop": "task-mate-desktop",
    "lxde-desktop": "task-lxde-desktop",
    "lxqt-desktop": "task-lxqt-desktop",
    "web-server": "task-web-server",
    "ssh-server": "task-ssh-server",
    "laptop": "task-laptop",
}

TASKS_BY_RELEASE: dict[str, dict[str, str | None]] = {
    "bookworm": dict(_COMMON),
    "trixie": dict(_COMMON),
}

DESKTOP_TASKS = frozenset(t for t in _COMMON if t.endswith("-desktop") or t == "desktop")

# The display manager each desktop task brings (for the desktop check).
DISPLAY_MANAGER = {
    "gnome-desktop": "gdm3",
    "gnome-flashback-desktop": "gdm3",
    "kde-desktop": "sddm",
    "lxqt-desktop": "sddm",
}




@dataclass(frozen=True)
class Session:
    """A desktop's X session as its display manager names it, and the panel process that shows it is up."""

    name: str  # /usr/share/xsessions/NAME.desktop
    panel: str  # process name (as pgrep -x sees it)


# The desktops whose session imgbuild can start by autologin (lightdm's autologin-session) and prove (the
# panel running for the user). Only LXDE is booted in the tests; others join once a test boots them.
SESSIONS = {
    "lxde-desktop": Session(name="LXDE", panel="lxpanel"),
}


def desktop_session(tasks: list[str]) -> Session | None:
    for task in tasks:
        if task in SESSIONS:
            return SESSIONS[task]
    return None


def tasks_for(release: str) -> dict[str, str | None]:
    return TASKS_BY_RELEASE.get(release, {})


def task_packages(release: str, tasks: list[str]) -> list[str]:
    """The task-* packages for *tasks* (``standard`` has none)."""
    table = tasks_for(release)
    return [pkg for t in tasks if (pkg := table.get(t))]


def display_manager(tasks: list[str]) -> str:
    for task in tasks:
        if task in DISPLAY_MANAGER:
            return DISPLAY_MANAGER[task]
    return "lightdm"
