"""Looking at a lab from inside its namespaces: links, addresses, sysctls, nftables, ARP, TCP both ways.

Everything runs in namespaces the lab made; nothing here touches this machine's own network.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any

from builder.lab import netns as ns


def links(netns: str) -> dict[str, dict[str, Any]]:
    return {link["ifname"]: link for link in ns.ip_json("-d", "link", "show", netns=netns)}


def addresses(netns: str, ifname: str) -> list[str]:
    return [f"{a['local']}/{a['prefixlen']}" for link in ns.ip_json("addr", "show", "dev", ifname, netns=netns)
            for a in link.get("addr_info", []) if a.get("family") == "inet"]


def default_route(netns: str) -> str | None:
    routes = ns.ip_json("route", "show", "default", netns=netns)
    return routes[0].get("gateway") if routes else None


def run_in(netns: str, *argv: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(ns.in_netns(netns, list(argv)), capture_output=True, text=True, timeout=timeout)


def nft_ruleset(netns: str) -> str:
    proc = run_in(netns, "nft", "list", "ruleset")
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


CONNECT = """
import socket, sys
s = socket.socket(); s.settimeout(float(sys.argv[3]))
try:
    s.connect((sys.argv[1], int(sys.argv[2]))); print("connected")
except ConnectionRefusedError: print("refused")
except OSError as e: print("failed", e.errno, e.strerror or e)
"""


def connect(netns: str, host: str, port: int, timeout: float = 5) -> str:
    """From *netns*: 'connected', 'refused' (the host answered: reachable, port closed) or 'failed ERRNO why'."""
    proc = run_in(netns, sys.executable, "-c", CONNECT, host, str(port), str(timeout), timeout=timeout + 20)
    return proc.stdout.strip() or proc.stderr.strip()


def neighbour_mac(netns: str, address: str) -> str | None:
    for entry in ns.ip_json("neigh", "show", address, netns=netns):
        if entry.get("lladdr") and "FAILED" not in entry.get("state", []) and "INCOMPLETE" not in entry.get("state", []):
            return str(entry["lladdr"])
    return None


def mac_of(netns: str, ifname: str) -> str:
    return str(links(netns)[ifname]["address"])


ACCEPT_ONE = """
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1]))); s.listen(1); s.settimeout(float(sys.argv[2]))
print("listening", flush=True)
try:
    c, peer = s.accept(); print("peer", peer[0], flush=True)
except OSError: print("nobody", flush=True)
"""


@dataclass
class Listener:
    """A one-connection TCP listener inside a namespace that tells who connected."""

    proc: subprocess.Popen[str]

    def peer(self, timeout: float = 120) -> str | None:
        out, _ = self.proc.communicate(timeout=timeout)
        for line in out.splitlines():
            if line.startswith("peer "):
                return line.split()[1]
        return None


def listen(netns: str, port: int, timeout: float = 90) -> Listener:
    proc = subprocess.Popen(ns.in_netns(netns, [sys.executable, "-u", "-c", ACCEPT_ONE, str(port), str(timeout)]),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.stdout is not None
    deadline = time.monotonic() + 60  # a loaded 2-core machine starts Python slowly
    while time.monotonic() < deadline:
        if proc.stdout.readline().strip() == "listening":
            return Listener(proc)
    proc.kill()
    raise AssertionError(f"no listener in {netns}")


def plug_probe(lab: str, node: str, bridge: str, address: str, gateway: str, role: str = "probe") -> str:
    """A namespace on *bridge* with *address* and a default route via *gateway*: a stand-in guest (named under
    the lab's prefix, so lab down removes it)."""
    from builder.lab.plan import netns_name

    probe = netns_name(lab, role)
    ns.add_netns(probe)
    ns.ip("link", "add", f"{role[:10]}0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", probe)
    ns.ip("link", "set", f"{role[:10]}0", "master", bridge, "up", netns=node)
    ns.ip("addr", "add", address, "dev", "eth0", netns=probe)
    ns.ip("link", "set", "eth0", "up", netns=probe)
    ns.ip("route", "add", "default", "via", gateway, netns=probe)
    return probe


def bridge_ports(netns: str, bridge: str) -> list[str]:
    return sorted(name for name, link in links(netns).items() if link.get("master") == bridge)


def as_json(value: Any) -> str:
    return json.dumps(value, indent=1, default=str)
