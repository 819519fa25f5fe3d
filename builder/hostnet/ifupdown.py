"""Run Debian's ifupdown2 on a rendered interfaces file without touching this machine's own network.

Every run is in a private mount namespace (and, to apply, inside a network namespace imgbuild made):
- a fresh tmpfs on /run: ifupdown2's lock (/run/network/.lock) and state are private, so runs for
  different namespaces neither block nor confuse each other, and nothing is left behind;
- ifupdown2.conf replaced by a copy with the state directory moved there, Mako templates off (a rendered
  file is literal text) and the /etc/network/if-*.d scripts off (they act on the host's files);
- an empty /etc/network/interfaces.d, so the file's `source /etc/network/interfaces.d/*` line (PVE's SDN)
  reads nothing of this machine's.
The interfaces text goes in on stdin (`-i -`).
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError
from builder.proc import require_tool, run

SYSTEM_CONF = Path("/etc/network/ifupdown2/ifupdown2.conf")
OVERRIDES = {
    "template_enable": "0",
    "addon_scripts_support": "0",
    "state_dir": "/run/network/",
    "use_daemon": "no",
}
# Runs with "$0" = the private ifupdown2.conf and "$@" = the ifupdown2 command.
PRIVATE_MOUNTS = """set -e
mount -t tmpfs imgbuild-ifupdown2 /run
mkdir -p /run/network
mount --bind "$0" /etc/network/ifupdown2/ifupdown2.conf
if [ -d /etc/network/interfaces.d ]; then mount -t tmpfs imgbuild-empty /etc/network/interfaces.d; fi
exec "$@"
"""


@dataclass(frozen=True)
class Outcome:
    ok: bool
    exit_status: int
    messages: str  # ifupdown2's stderr (warnings and errors)


def private_conf(system: str) -> str:
    """*system*'s ifupdown2.conf with the private-run settings replaced or added (pure)."""
    lines, seen = [], set()
    for line in system.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in OVERRIDES and not line.lstrip().startswith("#"):
            lines.append(f"{key}={OVERRIDES[key]}")
            seen.add(key)
        else:
            lines.append(line)
    lines += [f"{key}={value}" for key, value in OVERRIDES.items() if key not in seen]
    return "\n".join(lines) + "\n"


def _require() -> None:
    require_tool("ifup", "ifupdown2")
    require_tool("unshare", "util-linux")
    if os.geteuid() != 0:
        raise ImgbuildError("running ifupdown2 needs root (it mounts a private /run and, to apply, changes a network "
                            "namespace): run as root or with sudo")
    if not SYSTEM_CONF.is_file():
        raise ImgbuildError(f"{SYSTEM_CONF} is missing: reinstall the Debian package ifupdown2")


@contextlib.contextmanager
def _private(args: list[str], netns: str | None) -> Iterator[list[str]]:
    """The argv that runs ifupdown2 command *args* privately, valid while the context lasts."""
    _require()
    with tempfile.TemporaryDirectory(prefix="imgbuild-ifupdown2-") as tmp:
        conf = Path(tmp) / "ifupdown2.conf"
        conf.write_text(private_conf(SYSTEM_CONF.read_text()))
        argv = ["unshare", "--mount", "--propagation", "private", "sh", "-c", PRIVATE_MOUNTS, str(conf), *args, "-i", "-"]
        yield ["ip", "netns", "exec", netns, *argv] if netns is not None else argv


def ifupdown2(args: list[str], text: str, *, netns: str | None = None, timeout: float = 120) -> Outcome:
    """Run ``ifup``/``ifdown``/``ifquery`` *args* on *text* privately (see the module doc)."""
    with _private(args, netns) as argv:
        proc = run(argv, check=False, input=text.encode(), timeout=timeout)
    # brctl is only used for what netlink cannot do; ifupdown2 warns about it on every run.
    lines = proc.stderr.decode("utf-8", "replace").splitlines()
    messages = "\n".join(ln for ln in lines if "/sbin/brctl: missing" not in ln).strip()
    return Outcome(proc.returncode == 0, proc.returncode, messages)


def syntax_check(text: str) -> Outcome:
    """``ifup -a -s``: ifupdown2 parses *text* and checks every attribute and value it knows."""
    return ifupdown2(["ifup", "-a", "-s"], text)


def parsed_view(text: str) -> list[dict[str, Any]]:
    """``ifquery -a -o json``: the interfaces as ifupdown2 understood them (name, addr_method, config)."""
    with _private(["ifquery", "-a", "-o", "json"], None) as argv:
        proc = run(argv, input=text.encode(), timeout=60)
    try:
        return json.loads(proc.stdout)
    except ValueError as exc:
        raise ImgbuildError("ifquery printed no JSON", detail=proc.stdout.decode("utf-8", "replace")[-2000:]) from exc


def ifup(text: str, netns: str) -> Outcome:
    """Bring every ``auto`` interface of *text* up inside network namespace *netns*."""
    return ifupdown2(["ifup", "-a"], text, netns=netns)
