"""Fault injection: make chosen calls fail the way a real PVE node or network can.

Every rule fires at most ``count`` times (``None``: every time) and records how often it fired, so
a test can assert that the fault it planted was actually hit:

    rule = sim.faults.http_error("POST", r"/nodes/[^/]+/qemu$", status=503, count=1)
    ...
    assert rule.hits == 1

Kinds:
- ``http_error``: the call answers *status* with *message* before doing anything;
- ``drop_upload``: the connection of an upload is closed after *after_bytes* of its body;
- ``hang_task``: the task of a matching call never finishes (until stopped or the simulator stops);
- ``fail_task``: the task fails with *message* after writing *log* lines, without doing its work;
- ``agent_not_running``: the guest agent of a VM does not answer ("QEMU guest agent is not running").
"""

from __future__ import annotations

import re
import threading
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class Rule:
    kind: str
    method: str = "*"  # HTTP method or "*"
    path: str = ".*"  # regex searched in the path below /api2/json (e.g. "/status/start$")
    task_type: str = "*"  # task kinds: qmcreate, qmstart, imgcopy ...
    vmid: int | None = None
    status: int = 500
    message: str = "simulated failure"
    after_bytes: int = 0
    log: tuple[str, ...] = ()
    count: int | None = 1
    hits: int = 0
    ident: int = 0
    _re: re.Pattern[str] | None = field(default=None, repr=False, compare=False)

    def path_matches(self, method: str, path: str) -> bool:
        if self._re is None:
            self._re = re.compile(self.path)
        return self.method in ("*", method) and self._re.search(path) is not None

    def public(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("_re", None)
        out["log"] = list(self.log)
        return out


class FaultInjector:
    KINDS = ("http_error", "drop_upload", "hang_task", "fail_task", "agent_not_running")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.rules: list[Rule] = []
        self._next = 1

    def _add(self, rule: Rule) -> Rule:
        if rule.kind not in self.KINDS:
            raise ValueError(f"unknown fault kind {rule.kind!r}; choose one of {', '.join(self.KINDS)}")
        with self._lock:
            rule.ident = self._next
            self._next += 1
            self.rules.append(rule)
        return rule

    def add(self, spec: dict[str, Any]) -> Rule:
        """Add a rule from a plain dict (what the control endpoint receives)."""
        allowed = {"kind", "method", "path", "task_type", "vmid", "status", "message", "after_bytes", "log", "count"}
        unknown = set(spec) - allowed
        if unknown:
            raise ValueError(f"unknown fault field(s): {', '.join(sorted(unknown))}")
        spec = dict(spec)
        if "log" in spec:
            spec["log"] = tuple(spec["log"])
        return self._add(Rule(**spec))

    def http_error(
        self, method: str = "*", path: str = ".*", *, status: int = 500, message: str = "simulated failure",
        count: int | None = 1,
    ) -> Rule:
        return self._add(Rule("http_error", method=method, path=path, status=status, message=message, count=count))

    def drop_upload(self, *, after_bytes: int = 1 << 20, path: str = "/upload$", count: int | None = 1) -> Rule:
        return self._add(Rule("drop_upload", method="POST", path=path, after_bytes=after_bytes, count=count))

    def hang_task(self, task_type: str = "*", *, vmid: int | None = None, count: int | None = 1) -> Rule:
        return self._add(Rule("hang_task", task_type=task_type, vmid=vmid, count=count))

    def fail_task(
        self, task_type: str = "*", *, message: str = "simulated task failure", log: tuple[str, ...] | list[str] = (),
        vmid: int | None = None, count: int | None = 1,
    ) -> Rule:
        return self._add(
            Rule("fail_task", task_type=task_type, vmid=vmid, message=message, log=tuple(log), count=count)
        )

    def agent_not_running(self, vmid: int | None = None, *, count: int | None = None) -> Rule:
        return self._add(Rule("agent_not_running", vmid=vmid, count=count))

    def clear(self) -> None:
        with self._lock:
            self.rules.clear()

    def _take(self, pred: Any) -> Rule | None:
        with self._lock:
            for rule in self.rules:
                if (rule.count is None or rule.hits < rule.count) and pred(rule):
                    rule.hits += 1
                    return rule
        return None

    # --- queries used by the server and the API ---------------------------------------------

    def take_http_error(self, method: str, path: str) -> Rule | None:
        return self._take(lambda r: r.kind == "http_error" and r.path_matches(method, path))

    def take_drop_upload(self, path: str) -> Rule | None:
        return self._take(lambda r: r.kind == "drop_upload" and r.path_matches("POST", path))

    def _task_match(self, rule: Rule, kind: str, task_type: str, vmid: int | None) -> bool:
        return (
            rule.kind == kind
            and rule.task_type in ("*", task_type)
            and (rule.vmid is None or rule.vmid == vmid)
        )

    def take_task_fault(self, task_type: str, vmid: int | None) -> Rule | None:
        return self._take(
            lambda r: self._task_match(r, "hang_task", task_type, vmid) or self._task_match(r, "fail_task", task_type, vmid)
        )

    def take_agent_fault(self, vmid: int) -> Rule | None:
        return self._take(lambda r: r.kind == "agent_not_running" and (r.vmid is None or r.vmid == vmid))
