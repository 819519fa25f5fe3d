"""The cluster as imgbuild sees it, and where a new VM goes.

``ClusterView.read(client)`` is one ``GET /cluster/resources``: every node (online or not, with its
memory and CPU figures when the token may read them: Sys.Audit on /nodes/<node>), every storage per
node (content types, shared or not) and every VM (with its node). ``choose_node`` is pure: among the
online nodes that can hold the VM's memory, the one with the most free memory; when several are within
``MEMORY_TIE`` of it, the least CPU load wins. Memory that VMs this process is placing right now will
use (``Reservations``) counts as used, so concurrent makes spread over the nodes instead of all seeing
the same free memory.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

GIB = 1 << 30
MEMORY_TIE = 1 * GIB  # nodes this close in free memory are compared by CPU load


@dataclass(frozen=True)
class NodeInfo:
    name: str
    online: bool
    mem: int | None = None  # used bytes (None: not visible to this token)
    maxmem: int | None = None
    cpu: float | None = None  # load 0..1

    @property
    def free(self) -> int | None:
        if self.mem is None or self.maxmem is None:
            return None
        return self.maxmem - self.mem


@dataclass(frozen=True)
class StorageInfo:
    storage: str
    node: str
    content: frozenset[str]
    shared: bool


@dataclass
class ClusterView:
    nodes: dict[str, NodeInfo] = field(default_factory=dict)
    storages: list[StorageInfo] = field(default_factory=list)
    vms: list[dict[str, Any]] = field(default_factory=list)

    @classmethod
    def parse(cls, resources: list[dict[str, Any]]) -> ClusterView:
        view = cls()
        for entry in resources:
            kind = entry.get("type")
            if kind == "node":
                name = str(entry.get("node"))
                view.nodes[name] = NodeInfo(
                    name, entry.get("status") == "online",
                    _int(entry.get("mem")), _int(entry.get("maxmem")), _float(entry.get("cpu")))
            elif kind == "storage":
                view.storages.append(StorageInfo(
                    str(entry.get("storage")), str(entry.get("node")),
                    frozenset(c for c in str(entry.get("content") or "").split(",") if c),
                    bool(int(entry.get("shared") or 0))))
            elif kind == "qemu":
                view.vms.append(entry)
        return view

    @property
    def online(self) -> list[str]:
        return sorted(n for n, info in self.nodes.items() if info.online)

    def is_shared(self, storage: str) -> bool:
        return any(s.shared for s in self.storages if s.storage == storage)


def _int(value: Any) -> int | None:
    return None if value is None else int(value)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def fmt_gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


@dataclass(frozen=True)
class Placement:
    node: str | None  # None: nowhere fits
    reason: str  # one line: why this node, or why none


def choose_node(nodes: Mapping[str, NodeInfo], memory: int, reserved: Mapping[str, int] | None = None,
                allowed: set[str] | None = None) -> Placement:
    """Where a VM needing *memory* bytes goes. *reserved*: bytes of VMs this process is placing per node;
    *allowed*: the nodes the VM may run on (None: all)."""
    reserved = reserved or {}
    candidates: list[tuple[int, float, str]] = []
    notes: list[str] = []
    for name in sorted(nodes):
        info = nodes[name]
        if allowed is not None and name not in allowed:
            continue
        if not info.online:
            notes.append(f"{name} offline")
            continue
        if info.free is None:
            notes.append(f"{name}: memory not visible")
            continue
        free = info.free - reserved.get(name, 0)
        if free < memory:
            notes.append(f"{name}: {fmt_gib(max(free, 0))} free")
            continue
        candidates.append((free, info.cpu or 0.0, name))
    if not candidates:
        why = "; ".join(notes) or "no nodes"
        return Placement(None, f"no online node has {fmt_gib(memory)} of memory free ({why})")
    best_free = max(c[0] for c in candidates)
    close = [c for c in candidates if best_free - c[0] <= MEMORY_TIE]
    free, cpu, node = min(close, key=lambda c: (c[1], -c[0], c[2]))
    others = [f"{n}: {fmt_gib(f)} free" for f, _, n in candidates if n != node] + notes
    reason = f"{node}: {fmt_gib(free)} free, CPU {cpu:.0%}" + (f" ({'; '.join(others)})" if others else "")
    return Placement(node, reason)


class Reservations:
    """Memory this process has promised to VMs it is placing, per cluster and node.

    ``make --all -j N`` runs jobs at once in one process: each reserves its VM's memory on the node it
    chose, so the next job sees that node fuller even before PVE reports the VM's use. A reservation
    ends when the job ends (the VM is destroyed, shut down or the target closed) or after ``ttl``.
    """

    def __init__(self, ttl: float = 3600.0) -> None:
        self._lock = threading.Lock()
        self.placing = threading.Lock()  # held from reading the reservations to holding one: one choice at a time
        self._held: dict[tuple[str, str], tuple[str, int, float]] = {}  # (cluster, vm name) -> (node, bytes, since)
        self.ttl = ttl

    def on(self, cluster: str) -> dict[str, int]:
        now = time.monotonic()
        out: dict[str, int] = {}
        with self._lock:
            for (c, name), (node, size, since) in list(self._held.items()):
                if now - since > self.ttl:
                    del self._held[(c, name)]
                elif c == cluster:
                    out[node] = out.get(node, 0) + size
        return out

    def hold(self, cluster: str, vm: str, node: str, size: int) -> None:
        with self._lock:
            self._held[(cluster, vm)] = (node, size, time.monotonic())

    def release(self, cluster: str, vm: str) -> None:
        with self._lock:
            self._held.pop((cluster, vm), None)


RESERVATIONS = Reservations()
