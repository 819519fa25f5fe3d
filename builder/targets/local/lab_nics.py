"""The lab target's network: a VM's NICs are taps in a lab's bridges (builder/lab), not user networking.

QEMU runs inside the lab's node namespace and makes one tap per NIC; once it runs, each tap joins the
bridge the recipe names, as on a Proxmox VE node. This machine reaches a guest port only through a
loopback forward that connects from the node (builder/lab/forward.py), started the first time the port is
asked for and stopped with the VM.
"""

from __future__ import annotations

from builder.lab.attach import check_bridge, plug, tap_name
from builder.lab.forward import MARKER as FORWARD_MARKER
from builder.lab.forward import start_forward, stop_forward
from builder.targets.base import Endpoint, VMSpec
from builder.targets.local.state import LabForward, LabNics, process_alive


def lab_nics(lab: str, spec: VMSpec) -> LabNics:
    """Where *spec*'s NICs go in lab *lab*; fails now (before any disk is made) when the lab cannot take them."""
    node = ""
    for nic in spec.nics:
        node = check_bridge(lab, nic.bridge, nic.vlan)
    return LabNics(lab=lab, netns=node, bridges=[n.bridge for n in spec.nics], vlans=[n.vlan for n in spec.nics])


def check_bridges(nics: LabNics) -> None:
    """Before QEMU starts (again): the lab is up, with the bridges the VM's NICs join."""
    for bridge, vlan in zip(nics.bridges, nics.vlans, strict=True):
        check_bridge(nics.lab, bridge, vlan)


def taps(vm: str, nics: LabNics) -> tuple[str, ...]:
    return tuple(tap_name(vm, i) for i in range(len(nics.bridges)))


def plug_all(vm: str, nics: LabNics) -> None:
    """Put the VM's taps (made by QEMU, which runs now) into their bridges."""
    for tap, bridge, vlan in zip(taps(vm, nics), nics.bridges, nics.vlans, strict=True):
        plug(nics.lab, tap, vm, bridge, vlan)


def forward(nics: LabNics, address: str, port: int) -> tuple[Endpoint, bool]:
    """A loopback endpoint for *address*:*port*, and whether a new forward was started (the state changed)."""
    via = f"loopback forward from the lab node to {address}:{port}"
    for fwd in nics.forwards:
        if fwd.address == address and fwd.port == port and process_alive(fwd.pid, FORWARD_MARKER):
            return Endpoint("127.0.0.1", fwd.host_port, via), False
    host_port, pid = start_forward(nics.netns, address, port)
    nics.forwards = [f for f in nics.forwards if not (f.address == address and f.port == port)]
    nics.forwards.append(LabForward(address, port, host_port, pid))
    return Endpoint("127.0.0.1", host_port, via), True


def stop_forwards(nics: LabNics) -> bool:
    """Stop the VM's forwards; whether there were any."""
    had = bool(nics.forwards)
    for fwd in nics.forwards:
        stop_forward(fwd.pid)
    nics.forwards = []
    return had

