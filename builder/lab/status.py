"""imgbuild lab status: a lab's namespaces, bridges with their ports and guests, clients and DHCP servers."""

from __future__ import annotations

from typing import Any

from builder.errors import ImgbuildError
from builder.lab import netns as ns
from builder.lab.dhcp import dhcp_running
from builder.lab.plan import lab_prefix
from builder.lab.state import load_state

GUEST_ALIAS = "imgbuild-guest:"  # a guest's tap carries "imgbuild-guest:VMNAME" as its interface alias


def lab_status(lab: str) -> dict[str, Any]:
    try:
        state = load_state(lab)
        problem = None
    except ImgbuildError as exc:
        state, problem = None, exc.message
    present = [n for n in ns.list_netns() if n.startswith(lab_prefix(lab))]
    recorded = state.namespaces if state else []
    roles = {n: n[len(lab_prefix(lab)):] for n in sorted(set(recorded) | set(present))}
    status: dict[str, Any] = {
        "lab": lab,
        "up": bool(state and state.complete and all(n in present for n in recorded)),
        "complete": bool(state and state.complete),
        "host_file": state.host_file if state else None,
        "problem": problem,
        "namespaces": [{"name": n, "role": role, "exists": n in present,
                        "addresses": _addresses(n) if n in present else []} for n, role in roles.items()],
        "bridges": _bridges(state.node) if state and state.node in present else [],
        "dhcp": [{"bridge": d.bridge, "netns": d.netns, "pid": dhcp_running(d)} for d in (state.dhcp if state else [])],
    }
    status["guests"] = sorted({g for b in status["bridges"] for g in b["guests"]})
    return status


def _addresses(netns: str) -> list[str]:
    out = []
    for link in ns.ip_json("addr", "show", netns=netns):
        for a in link.get("addr_info", []):
            if a.get("family") == "inet" and link.get("ifname") != "lo":
                out.append(f"{link['ifname']} {a['local']}/{a['prefixlen']}")
    return out


def _bridges(node: str) -> list[dict[str, Any]]:
    links = ns.ip_json("-d", "link", "show", netns=node)
    addrs = {link["ifname"]: [f"{a['local']}/{a['prefixlen']}" for a in link.get("addr_info", []) if a.get("family") == "inet"]
             for link in ns.ip_json("addr", "show", netns=node)}
    bridges = []
    for link in links:
        if link.get("linkinfo", {}).get("info_kind") != "bridge":
            continue
        name = link["ifname"]
        ports = [p for p in links if p.get("master") == name]
        guests = [p["ifalias"][len(GUEST_ALIAS):] for p in ports if str(p.get("ifalias", "")).startswith(GUEST_ALIAS)]
        bridges.append({"name": name, "addresses": addrs.get(name, []), "state": link.get("operstate"),
                        "ports": [p["ifname"] for p in ports], "guests": guests})
    return bridges
