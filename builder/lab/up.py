"""imgbuild lab up: build a host description's network in namespaces on this machine and bring it up with
ifupdown2, exactly as rendered for the Proxmox VE node.

The lab's record is written before the first namespace is made; whatever fails or is interrupted on the way
tears down what was made (and a crash leaves the record for `lab down`).
"""

from __future__ import annotations

import os
from pathlib import Path

from builder.errors import ImgbuildError
from builder.hostnet import ifupdown
from builder.lab import netns as ns
from builder.lab.dhcp import start_dhcp
from builder.lab.down import teardown
from builder.lab.kernel import refusals
from builder.lab.plan import CLIENT_IFNAME, WIRES_ROLE, LabPlan, netns_name
from builder.lab.state import LabState, lab_dir, lab_lock, load_state
from builder.proc import require_tool
from builder.progress import NullProgress, Progress

# Capability numbers from linux/capability.h.
CAPABILITIES = {12: "CAP_NET_ADMIN (namespaces, links, addresses, nftables)",
                21: "CAP_SYS_ADMIN (mounting namespaces and ifupdown2's private /run)"}


def missing_privileges() -> list[str]:
    """What this process lacks to build a lab (empty when it has everything)."""
    missing = []
    if os.geteuid() != 0:
        missing.append("root (ifupdown2 refuses to run as another user; /run/netns belongs to root)")
    try:
        status = Path("/proc/self/status").read_text()
        effective = int(next(ln.split()[1] for ln in status.splitlines() if ln.startswith("CapEff:")), 16)
    except (OSError, StopIteration, ValueError):
        effective = 0
    missing += [name for bit, name in CAPABILITIES.items() if not effective & (1 << bit)]
    return missing


def preflight(plan: LabPlan) -> None:
    missing = missing_privileges()
    if missing:
        raise ImgbuildError(f"lab up needs privileges this process does not have: {'; '.join(missing)}",
                            detail="run it as root, e.g. sudo imgbuild lab up")
    require_tool("ip", "iproute2")
    require_tool("ifup", "ifupdown2")
    require_tool("unshare", "util-linux")
    if any(b.nat is not None for b in plan.host.bridges):
        require_tool("iptables", "iptables")  # the rendered post-up lines call it, as on PVE
    if plan.dhcp:
        require_tool("dnsmasq", "dnsmasq-base")
    refused = refusals(plan.host, plan.lab)
    if refused:
        raise ImgbuildError(
            f"this machine's kernel cannot build {plan.host.name}: it refuses "
            + ", ".join(f"{r.feature} (needed by {r.needed_by})" for r in refused),
            detail="\n".join(f"{r.feature}: {r.error}" for r in refused)
            + "\nimgbuild host-net render still renders it, and --check runs ifupdown2's syntax check on it",
        )


def lab_up(plan: LabPlan, *, progress: Progress = NullProgress()) -> LabState:
    preflight(plan)
    with lab_lock(plan.lab):
        old = load_state(plan.lab)
        leftovers = [n for n in plan.namespaces if ns.exists(n)]
        if old is not None or leftovers:
            what = f"from {old.host_file}" if old else f"namespaces {', '.join(leftovers)} exist"
            raise ImgbuildError(f"lab {plan.lab} is already up ({what})",
                                detail=f"remove it first: imgbuild lab down --lab {plan.lab}")
        files = lab_dir(plan.lab)
        files.mkdir(parents=True, exist_ok=True, mode=0o700)
        state = LabState(lab=plan.lab, host_file=str(plan.host.source), node=plan.node,
                         namespaces=list(plan.namespaces), clients={c.role: c.netns for c in plan.clients})
        state.save()
        try:
            _build(plan, state, files, progress)
        except BaseException:
            progress.note(f"lab {plan.lab} failed to come up: removing what was made")
            teardown(plan.lab)
            raise
        return state


def _build(plan: LabPlan, state: LabState, files: Path, progress: Progress) -> None:
    for netns in plan.namespaces:
        progress.step(f"namespace {netns}")
        ns.add_netns(netns)
    for client in plan.clients:
        progress.step(f"{client.role}: cable {client.nic} <-> {CLIENT_IFNAME}, {client.address}")
        ns.ip("link", "add", client.nic, "netns", plan.node, "type", "veth", "peer", "name", CLIENT_IFNAME,
              "netns", client.netns)
        ns.ip("addr", "add", client.address.with_prefixlen, "dev", CLIENT_IFNAME, netns=client.netns)
        ns.ip("link", "set", CLIENT_IFNAME, "up", netns=client.netns)
        for block in client.onlink:  # the provider's router thinks the routed block is on its wire
            ns.ip("route", "add", str(block), "dev", CLIENT_IFNAME, netns=client.netns)
        if client.gateway is not None:
            ns.ip("route", "add", "default", "via", str(client.gateway), netns=client.netns)
    wires = netns_name(plan.lab, WIRES_ROLE)
    for wire in plan.wires:
        ns.ip("link", "add", wire.nic, "netns", plan.node, "type", "veth", "peer", "name", wire.peer, "netns", wires)
        ns.ip("link", "set", wire.peer, "up", netns=wires)
    progress.step(f"ifupdown2: ifup -a in {plan.node}")
    outcome = ifupdown.ifup(plan.interfaces, plan.node)
    if not outcome.ok:
        raise ImgbuildError(f"ifupdown2 could not bring up {plan.host.name} (exit {outcome.exit_status})",
                            detail=outcome.messages)
    for dhcp in plan.dhcp:
        progress.step(f"DHCP for {dhcp.bridge}: {dhcp.range.start}-{dhcp.range.end} from {dhcp.netns}")
        state.dhcp.append(start_dhcp(dhcp, files))
        state.save()
    state.complete = True
    state.save()
