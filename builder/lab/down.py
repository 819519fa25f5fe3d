"""imgbuild lab down: remove a lab, also what a crashed or interrupted `lab up` left.

The namespaces come from the lab's record and, should that be missing or unreadable, from their names
(every namespace of lab NAME starts with imgbuild-NAME_). Every process still running in one of them
(dnsmasq, guests' QEMU, loopback forwarders) is stopped first; removing a namespace removes its links,
addresses and nftables rules with it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from builder.errors import ImgbuildError
from builder.lab import netns as ns
from builder.lab.plan import lab_prefix
from builder.lab.state import forget, lab_dir, load_state


@dataclass
class Removed:
    lab: str
    namespaces: list[str] = field(default_factory=list)
    processes: list[str] = field(default_factory=list)


def teardown(lab: str) -> Removed:
    """Remove everything of lab *lab* that exists (idempotent). The caller holds the lab lock or is up."""
    removed = Removed(lab)
    try:
        state = load_state(lab)
    except ImgbuildError:
        state = None  # unreadable: the names are enough
    recorded = state.namespaces if state else []
    found = [n for n in ns.list_netns() if n.startswith(lab_prefix(lab))]
    for netns in sorted(set(recorded) | set(found)):
        if not ns.exists(netns):
            continue
        removed.processes += ns.kill_all(netns)
        ns.del_netns(netns)
        removed.namespaces.append(netns)
    forget(lab)
    if lab_dir(lab).exists():
        raise ImgbuildError(f"could not remove {lab_dir(lab)}")
    return removed


def lab_down(lab: str) -> Removed:
    from builder.lab.state import lab_lock

    with lab_lock(lab):
        return teardown(lab)
