"""What runs a simulated VM: the small interface and the fake used by API and fault tests.

The simulator keeps the VM configuration; a backend only runs it. ``FakeBackend`` runs nothing:
the "guest" is a record whose agent answers what the configuration implies (the static address
of ``ipconfig0``, the MAC of ``net0``) or what a test set. ``QemuBackend`` (qemu_backend.py) boots
the same disks and CD-ROMs in QEMU so the agent reports the real guest's address.
"""

from __future__ import annotations

import abc
import re
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal


@dataclass(frozen=True)
class DiskFile:
    """A drive of the VM as a file on this machine."""

    slot: str  # virtio0, ide2 ...
    path: Path | None  # None: an empty CD-ROM drive
    format: str  # qcow2, raw, iso
    media: Literal["disk", "cdrom"] = "disk"
    cache: str = "none"


class AgentUnavailable(Exception):
    """The guest agent does not answer (not installed, not started yet, wedged)."""


class VMBackend(abc.ABC):
    """Runs VMs for the simulator. vmids are ints; *config* is the PVE config dict."""

    @abc.abstractmethod
    def start(self, vmid: int, config: dict[str, Any], files: list[DiskFile]) -> None: ...

    @abc.abstractmethod
    def stop(self, vmid: int) -> None:
        """Hard stop (no-op if not running)."""

    def shutdown(self, vmid: int, timeout: float) -> bool:
        """ACPI power-off; True if the guest stopped within *timeout*. Default: hard stop."""
        self.stop(vmid)
        return True

    @abc.abstractmethod
    def is_running(self, vmid: int) -> bool: ...

    @abc.abstractmethod
    def agent_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        """The ``guest-network-get-interfaces`` result; raise AgentUnavailable if no answer."""

    def agent_hostname(self, vmid: int) -> str:
        raise AgentUnavailable("no host name")

    def agent_ping(self, vmid: int) -> None:
        self.agent_interfaces(vmid)

    def forwards(self, vmid: int) -> dict[int, int]:
        """Guest TCP port -> 127.0.0.1 port on this machine (empty when the guest is not reachable)."""
        return {}

    def vnc_display(self, vmid: int, password: str) -> socket.socket:
        """What ``qm vncproxy`` does before relaying: set the VNC password of the running VM (valid for 30 s)
        and connect to its VNC server. Raises with qm's message when it cannot."""
        if not self.is_running(vmid):
            raise RuntimeError(f"VM {vmid} not running")
        raise RuntimeError(f"pvesim: {type(self).__name__} runs no QEMU, so VM {vmid} has no VNC display")

    def pid(self, vmid: int) -> int | None:
        return None

    def close(self) -> None:  # noqa: B027 (optional hook: backends with nothing to stop keep it)
        """Stop everything (simulator shutdown)."""


@dataclass
class FakeGuest:
    config: dict[str, Any]
    started: float
    files: list[DiskFile]
    agent_interfaces: list[dict[str, Any]] | None = None  # explicit answer set by a test
    power_off_at: float | None = None


@dataclass
class FakeAgentSettings:
    interfaces: list[dict[str, Any]] | None = None
    hostname: str | None = None
    delay: float = 0.0  # seconds after start before the agent answers
    installed: bool = True  # False: the agent never answers


class FakeBackend(VMBackend):
    """Runs nothing. Agent answers derive from the VM config unless a test sets them.

    - ``set_agent(vmid, interfaces=..., delay=..., installed=...)`` shapes the agent's answers
      (vmid None: the default for every VM);
    - ``power_off_after(vmid, seconds)`` makes the guest power itself off (an installer's end);
    - ``ignore_acpi`` makes shutdown requests time out (to exercise forceStop).
    """

    def __init__(self, *, agent_delay: float = 0.0, shutdown_delay: float = 0.05) -> None:
        self._lock = threading.Lock()
        self.guests: dict[int, FakeGuest] = {}
        self.agent: dict[int | None, FakeAgentSettings] = {None: FakeAgentSettings(delay=agent_delay)}
        self.shutdown_delay = shutdown_delay
        self.ignore_acpi: set[int] = set()
        self.poweroff_plan: dict[int, float] = {}
        self.starts: list[tuple[int, list[DiskFile]]] = []  # every start, for assertions

    # --- test controls ----------------------------------------------------------------------
    def set_agent(
        self, vmid: int | None, *, interfaces: list[dict[str, Any]] | None = None, hostname: str | None = None,
        delay: float = 0.0, installed: bool = True,
    ) -> None:
        self.agent[vmid] = FakeAgentSettings(interfaces, hostname, delay, installed)

    def power_off_after(self, vmid: int, seconds: float) -> None:
        """The guest powers itself off *seconds* after its next start (or now, if running)."""
        with self._lock:
            guest = self.guests.get(vmid)
            if guest is not None:
                guest.power_off_at = time.monotonic() + seconds
            else:
                self.poweroff_plan[vmid] = seconds

    # --- VMBackend ----------------------------------------------------------------------------
    def start(self, vmid: int, config: dict[str, Any], files: list[DiskFile]) -> None:
        with self._lock:
            guest = FakeGuest(dict(config), time.monotonic(), list(files))
            if vmid in self.poweroff_plan:
                guest.power_off_at = guest.started + self.poweroff_plan.pop(vmid)
            self.guests[vmid] = guest
            self.starts.append((vmid, list(files)))

    def stop(self, vmid: int) -> None:
        with self._lock:
            self.guests.pop(vmid, None)

    def shutdown(self, vmid: int, timeout: float) -> bool:
        if vmid in self.ignore_acpi:
            time.sleep(min(timeout, 30))
            return not self.is_running(vmid)
        time.sleep(min(self.shutdown_delay, timeout))
        self.stop(vmid)
        return True

    def is_running(self, vmid: int) -> bool:
        with self._lock:
            guest = self.guests.get(vmid)
            if guest is None:
                return False
            if guest.power_off_at is not None and time.monotonic() >= guest.power_off_at:
                del self.guests[vmid]
                return False
            return True

    def _settings(self, vmid: int) -> FakeAgentSettings:
        return self.agent.get(vmid) or self.agent[None]

    def _guest_ready(self, vmid: int) -> FakeGuest:
        if not self.is_running(vmid):
            raise AgentUnavailable("not running")
        settings = self._settings(vmid)
        guest = self.guests[vmid]
        if not settings.installed or time.monotonic() - guest.started < settings.delay:
            raise AgentUnavailable("agent not running")
        return guest

    def agent_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        guest = self._guest_ready(vmid)
        settings = self._settings(vmid)
        if settings.interfaces is not None:
            return settings.interfaces
        return interfaces_from_config(guest.config)

    def agent_hostname(self, vmid: int) -> str:
        guest = self._guest_ready(vmid)
        return self._settings(vmid).hostname or str(guest.config.get("name") or f"vm{vmid}")

    def close(self) -> None:
        with self._lock:
            self.guests.clear()


def interfaces_from_config(config: dict[str, Any]) -> list[dict[str, Any]]:
    """What a guest configured by cloud-init from this config would report: lo plus one NIC per netN."""
    from tests.pvesim.schema import parse_property_string  # local: avoid an import cycle

    result: list[dict[str, Any]] = [
        {
            "name": "lo",
            "hardware-address": "00:00:00:00:00:00",
            "ip-addresses": [
                {"ip-address": "127.0.0.1", "ip-address-type": "ipv4", "prefix": 8},
                {"ip-address": "::1", "ip-address-type": "ipv6", "prefix": 128},
            ],
            "statistics": {"rx-bytes": 0, "tx-bytes": 0, "rx-packets": 0, "tx-packets": 0,
                           "rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0},
        }
    ]
    for i in range(32):
        net = config.get(f"net{i}")
        if not net:
            continue
        mac = _net_mac(str(net))
        addrs: list[dict[str, Any]] = []
        ipconf = config.get(f"ipconfig{i}")
        ip = "dhcp"
        if ipconf:
            try:
                ip = parse_property_string("pve-qm-ipconfig", str(ipconf)).get("ip", "dhcp")
            except Exception:
                ip = "dhcp"
        if ip not in ("dhcp", "manual"):
            address, _, prefix = ip.partition("/")
            addrs.append({"ip-address": address, "ip-address-type": "ipv4", "prefix": int(prefix)})
        else:
            addrs.append({"ip-address": f"10.0.2.{15 + i}", "ip-address-type": "ipv4", "prefix": 24})
        addrs.append({"ip-address": _link_local(mac), "ip-address-type": "ipv6", "prefix": 64})
        result.append({"name": f"eth{i}", "hardware-address": mac.lower(), "ip-addresses": addrs,
                       "statistics": {"rx-bytes": 1024, "tx-bytes": 1024, "rx-packets": 8, "tx-packets": 8,
                                      "rx-errs": 0, "tx-errs": 0, "rx-dropped": 0, "tx-dropped": 0}})
    return result


def _net_mac(net: str) -> str:
    """The MAC of a ``netN`` value as the simulator stores it (``virtio=BC:24:11:..,bridge=..``)."""
    m = re.search(r"(?:^|,)(?:[a-z0-9_-]+|macaddr)=((?:[0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2})(?:,|$)", net)
    return m.group(1) if m else "BC:24:11:00:00:00"


def _link_local(mac: str) -> str:
    octets = [int(x, 16) for x in mac.split(":")]
    octets[0] ^= 0x02
    eui = [*octets[:3], 255, 254, *octets[3:]]
    groups = [f"{eui[i] << 8 | eui[i + 1]:x}" for i in range(0, 8, 2)]
    return "fe80::" + ":".join(groups)
