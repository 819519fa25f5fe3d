"""Network namespaces and links, through iproute2 (the side effects of the lab, in one place).

Everything here acts inside namespaces imgbuild names; nothing touches this machine's own namespace.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError
from builder.proc import run

NETNS_DIR = Path("/run/netns")


def ip(*args: str, netns: str | None = None, check: bool = True) -> str:
    argv = ["ip", *(["-n", netns] if netns else []), *args]
    return run(argv, check=check, timeout=60).stdout.decode("utf-8", "replace")


def ip_json(*args: str, netns: str | None = None) -> list[dict[str, Any]]:
    out = ip("-j", *args, netns=netns)
    return json.loads(out) if out.strip() else []


def in_netns(netns: str, argv: list[str]) -> list[str]:
    """*argv* run inside *netns*."""
    return ["ip", "netns", "exec", netns, *argv]


def list_netns() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def exists(netns: str) -> bool:
    return netns in list_netns()


def add_netns(netns: str) -> None:
    ip("netns", "add", netns)
    ip("link", "set", "lo", "up", netns=netns)


def del_netns(netns: str) -> None:
    ip("netns", "del", netns, check=False)
    if exists(netns):
        raise ImgbuildError(f"could not remove network namespace {netns}")


def pids(netns: str) -> list[int]:
    out = ip("netns", "pids", netns, check=False)
    return [int(p) for p in out.split() if p.isdigit()]


def describe_pid(pid: int) -> str:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode(errors="replace")
    except OSError:
        return str(pid)
    return f"{Path(cmd).name} (pid {pid})"


def kill_all(netns: str, timeout: float = 10.0) -> list[str]:
    """Stop every process whose network namespace is *netns* (SIGTERM, then SIGKILL); their descriptions."""
    victims = pids(netns)
    names = [describe_pid(p) for p in victims]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in victims:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + timeout / 2
        while time.monotonic() < deadline and pids(netns):
            time.sleep(0.1)
        victims = pids(netns)
        if not victims:
            break
    return names


def sysctl(netns: str, key: str) -> str:
    """A /proc/sys value as seen inside *netns* (e.g. net/ipv4/ip_forward)."""
    return run(in_netns(netns, ["cat", f"/proc/sys/{key}"]), timeout=30).stdout.decode().strip()
