"""A local VM's state file (``out/NAME/vm/state.json``): enough to restart, reattach to and remove it.

QEMU runs detached (``-daemonize``), so a VM kept with ``make --keep`` outlives imgbuild; the next
imgbuild process finds it again from this file. ``VMState`` is the one description of that file: it is
read and validated here only (``load_state``), and a record that does not validate raises
``BrokenState`` naming the file and the first bad field, so the caller can show that one VM as broken
and still remove it.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError
from builder.fsutil import write_atomic
from builder.targets.local.network import SlirpNet
from builder.targets.local.qemu_cmd import DiskState

STATE_VERSION = 1
STATE_FILE = "state.json"


class BrokenState(ImgbuildError):
    """state.json exists but cannot be used (unreadable, not JSON, another version, a bad field)."""


@dataclass(frozen=True)
class ExtraForward:
    """A loopback port forwarded at run time (``endpoint``) to a guest address other than slirp's guest."""

    address: str
    port: int
    host_port: int


@dataclass(frozen=True)
class LabForward:
    """A loopback forward into a lab (builder/lab/forward.py): its own process, in the lab's node namespace."""

    address: str
    port: int
    host_port: int
    pid: int


@dataclass
class LabNics:
    """Target ``lab``: the VM's NICs are taps in bridges of lab *lab*, and QEMU runs in its node namespace."""

    lab: str
    netns: str
    bridges: list[str]  # by NIC: the bridge the recipe names (network.bridge)
    vlans: list[int | None]
    forwards: list[LabForward] = field(default_factory=list)


@dataclass
class VMState:
    # what the VM is (fixed at creation)
    name: str
    cores: int
    memory_mib: int
    cpu: str
    display: str
    bios: str
    disks: list[DiskState]
    macs: list[str]
    nic_models: list[str]
    slirp: SlirpNet | None  # target local: QEMU's user networking (None on the lab target)
    guest_ports: list[int]
    agent: bool
    console_log: str
    sockdir: str
    ovmf_vars: str | None = None
    spec: dict[str, Any] = field(default_factory=dict)  # the VMSpec it was created from, for people reading it
    inputs: str = ""  # VMSpec.inputs: the content key of what it was built from
    # what can change
    cdroms: list[str | None] = field(default_factory=list)  # the medium in each drive, by slot
    boot: list[str] = field(default_factory=list)
    template: bool = False
    template_of: str | None = None  # a linked clone's template
    linked_clones: list[str] = field(default_factory=list)  # a template's linked clones
    labels: list[str] = field(default_factory=list)  # release labels (builder/pipeline/releases.py)
    # the running QEMU (None/empty when stopped)
    pid: int | None = None
    accel: str | None = None
    tcg_threads: str | None = None
    console_offset: int = 0  # where this boot's output starts in the (appended) console log
    forwards: dict[int, int] = field(default_factory=dict)  # guest port -> loopback port
    extra_forwards: list[ExtraForward] = field(default_factory=list)
    lab: LabNics | None = None  # target lab: taps in a lab's bridges instead of user networking

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["forwards"] = {str(k): v for k, v in self.forwards.items()}  # JSON keys are strings
        data["version"] = STATE_VERSION
        return data


def load_state(vmdir: Path, socket_dirs: tuple[Path, ...] = ()) -> VMState | None:
    """The state of the VM in *vmdir*; None when it has none; BrokenState when it cannot be used.

    Paths the target writes or removes must be the VM's own: disks and OVMF variables in *vmdir*, the
    console log beside it, the sockets in *vmdir* or one of *socket_dirs*. A record naming anything
    else is broken (``destroy`` must never remove a directory a damaged file points at)."""
    path = vmdir / STATE_FILE
    try:
        data = json.loads(path.read_bytes())
    except (FileNotFoundError, NotADirectoryError):
        return None
    except (OSError, ValueError) as exc:  # ValueError covers bad JSON and bad UTF-8
        raise BrokenState(f"cannot read VM state {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise BrokenState(f"VM state {path} is not a JSON object")
    if data.get("version") != STATE_VERSION:
        raise BrokenState(f"VM state {path} was written by another imgbuild version; destroy the VM and recreate it")
    try:
        state = _parse(_Fields(data))
        _check_paths(state, vmdir, socket_dirs)
        return state
    except _Bad as exc:
        raise BrokenState(f"VM state {path}: {exc}") from None


def save_state(vmdir: Path, state: VMState) -> None:
    write_atomic(vmdir / STATE_FILE, json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n", mode=0o600)


class _Bad(Exception):
    pass


class _Fields:
    """Typed reads of one JSON object; each raises _Bad naming the field."""

    def __init__(self, data: dict[str, Any], where: str = "") -> None:
        self.data = data
        self.where = where

    def _get(self, key: str, kinds: tuple[type, ...], optional: bool, default: Any = None) -> Any:
        if key not in self.data:
            if optional:
                return default
            raise _Bad(f"field {self.where}{key} is missing")
        value = self.data[key]
        if value is None and optional:
            return default
        # bool is an int to Python; a field that wants an int must not take true/false
        if not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds):
            names = " or ".join(k.__name__ for k in kinds)
            raise _Bad(f"field {self.where}{key} must be {names}, not {type(value).__name__}")
        return value

    def text(self, key: str) -> str:
        return self._get(key, (str,), False)

    def opt_text(self, key: str) -> str | None:
        return self._get(key, (str,), True)

    def number(self, key: str) -> int:
        return self._get(key, (int,), False)

    def opt_number(self, key: str, default: int | None = None) -> int | None:
        return self._get(key, (int,), True, default)

    def flag(self, key: str, default: bool | None = None) -> bool:
        return self._get(key, (bool,), default is not None, default)

    def obj(self, key: str, optional: bool = False) -> _Fields:
        return _Fields(self._get(key, (dict,), optional, {}), f"{self.where}{key}.")

    def array(self, key: str, optional: bool = False) -> list[Any]:
        return self._get(key, (list,), optional, [])

    def texts(self, key: str, optional: bool = False, *, nullable: bool = False) -> list[Any]:
        items = self.array(key, optional)
        for i, item in enumerate(items):
            if not (isinstance(item, str) or (nullable and item is None)):
                raise _Bad(f"field {self.where}{key}[{i}] must be a string, not {type(item).__name__}")
        return items

    def numbers(self, key: str) -> list[int]:
        items = self.array(key)
        for i, item in enumerate(items):
            if not isinstance(item, int) or isinstance(item, bool):
                raise _Bad(f"field {self.where}{key}[{i}] must be an int, not {type(item).__name__}")
        return items

    def objs(self, key: str, optional: bool = False) -> list[_Fields]:
        out = []
        for i, item in enumerate(self.array(key, optional)):
            if not isinstance(item, dict):
                raise _Bad(f"field {self.where}{key}[{i}] must be an object, not {type(item).__name__}")
            out.append(_Fields(item, f"{self.where}{key}[{i}]."))
        return out


def _port(value: Any, where: str) -> int:
    try:
        port = int(value)
    except (TypeError, ValueError):
        raise _Bad(f"field {where} must be a port number, not {value!r}") from None
    if isinstance(value, bool) or not 0 < port < 65536:
        raise _Bad(f"field {where} must be a port number, not {value!r}")
    return port


def _parse(f: _Fields) -> VMState:
    slirp = f.obj("slirp", optional=True)
    lab = f.obj("lab", optional=True)
    forwards = f.obj("forwards", optional=True)
    state = VMState(
        name=f.text("name"),
        cores=f.number("cores"),
        memory_mib=f.number("memory_mib"),
        cpu=f.text("cpu"),
        display=f.text("display"),
        bios=f.text("bios"),
        disks=[DiskState(d.text("path"), d.text("bus"), d.text("cache")) for d in f.objs("disks")],
        macs=f.texts("macs"),
        nic_models=f.texts("nic_models"),
        slirp=SlirpNet(slirp.text("net"), slirp.text("host"), slirp.text("dns"), slirp.text("guest")) if slirp.data else None,
        guest_ports=f.numbers("guest_ports"),
        agent=f.flag("agent"),
        console_log=f.text("console_log"),
        sockdir=f.text("sockdir"),
        ovmf_vars=f.opt_text("ovmf_vars"),
        spec=f.obj("spec", optional=True).data,
        inputs=f.opt_text("inputs") or "",
        cdroms=f.texts("cdroms", nullable=True),
        boot=f.texts("boot"),
        template=f.flag("template", False),
        template_of=f.opt_text("template_of"),
        linked_clones=f.texts("linked_clones", optional=True),
        labels=f.texts("labels", optional=True),
        pid=f.opt_number("pid"),
        accel=f.opt_text("accel"),
        tcg_threads=f.opt_text("tcg_threads"),
        console_offset=f.opt_number("console_offset", 0) or 0,
        forwards={_port(k, f"forwards.{k}"): _port(v, f"forwards.{k}") for k, v in forwards.data.items()},
        extra_forwards=[ExtraForward(x.text("address"), _port(x.number("port"), "extra_forwards.port"),
                                     _port(x.number("host_port"), "extra_forwards.host_port"))
                        for x in f.objs("extra_forwards", optional=True)],
        lab=_lab_nics(lab) if lab.data else None,
    )
    if (state.slirp is None) == (state.lab is None):
        raise _Bad("a VM's NICs are on user networking (field slirp) or in a lab (field lab): exactly one of them")
    if len(state.nic_models) != len(state.macs):
        raise _Bad(f"{len(state.macs)} MAC address(es) but {len(state.nic_models)} NIC model(s)")
    if not state.macs:
        raise _Bad("field macs is empty (the local target needs a NIC)")
    if state.lab is not None and not len(state.lab.bridges) == len(state.lab.vlans) == len(state.macs):
        raise _Bad(f"{len(state.macs)} NIC(s) but {len(state.lab.bridges)} lab bridge(s), {len(state.lab.vlans)} VLAN(s)")
    return state


def _lab_nics(f: _Fields) -> LabNics:
    vlans = f.array("vlans")
    if not all(v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in vlans):
        raise _Bad("field lab.vlans must hold VLAN ids or null")
    return LabNics(lab=f.text("lab"), netns=f.text("netns"), bridges=f.texts("bridges"), vlans=vlans,
                   forwards=[LabForward(x.text("address"), _port(x.number("port"), "lab.forwards.port"),
                                        _port(x.number("host_port"), "lab.forwards.host_port"), x.number("pid"))
                             for x in f.objs("forwards", optional=True)])


def _check_paths(state: VMState, vmdir: Path, socket_dirs: tuple[Path, ...]) -> None:
    if Path(state.sockdir) not in (vmdir, *socket_dirs):
        raise _Bad(f"field sockdir names {state.sockdir}, not this VM's socket directory")
    if Path(state.console_log) != vmdir.parent / "console.log":
        raise _Bad(f"field console_log names {state.console_log}, not {vmdir.parent / 'console.log'}")
    for i, disk in enumerate(state.disks):
        if Path(disk.path).parent != vmdir:
            raise _Bad(f"field disks[{i}].path names {disk.path}, outside {vmdir}")
    if state.ovmf_vars is not None and Path(state.ovmf_vars).parent != vmdir:
        raise _Bad(f"field ovmf_vars names {state.ovmf_vars}, outside {vmdir}")


def process_alive(pid: int | None, marker: str) -> bool:
    """Is *pid* a live (not zombie) process whose command line contains *marker* (guards pid reuse)?"""
    if not pid:
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return False
    state = stat.rsplit(")", 1)[-1].split()[0]
    if state in ("Z", "X"):
        return False
    return marker in cmdline


def read_pidfile(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def o_direct_supported(path: Path) -> bool:
    """Can *path* (a file, or a new file in a directory) be opened with O_DIRECT, as cache=none needs?
    tmpfs, for one, cannot."""
    flag = getattr(os, "O_DIRECT", 0)
    if path.is_file():
        try:
            os.close(os.open(path, os.O_RDONLY | flag))
            return True
        except OSError:
            return False
    probe = path / ".odirect-probe"
    try:
        fd = os.open(probe, os.O_RDWR | os.O_CREAT | flag, 0o600)
    except OSError:
        return False
    else:
        os.close(fd)
        return True
    finally:
        try:
            probe.unlink()
        except OSError:
            pass
