"""Run the simulator's VMs for real, in QEMU on this machine, with the local target's building blocks.

The simulator owns the disks (its storage volumes), so this backend does not go through
``LocalTarget.create_vm`` (which makes its own overlay disks and would hide the guest's writes from
the simulator's template/clone/destroy). It uses the same pieces instead: ``qemu_argv`` and
``Layout`` (the command line), ``slirp_for`` (a user-mode network matching the VM's ``ipconfig0``),
``choose_accel`` (KVM only where it works, else TCG), ``QMPClient`` and ``GuestAgent``:

- disks: the VM's volumes (qcow2 files) on their bus, with their cache mode;
- CD-ROMs: the uploaded ISOs, in slot order (empty drives stay empty);
- NICs: the MAC and model of each ``netN``; the first NIC's guest ports are forwarded from free
  127.0.0.1 ports (``forwards(vmid)``: guest port -> loopback port);
- the guest agent on virtio-serial when ``agent: enabled=1``, so ``agent/network-get-interfaces``
  returns what the real guest reports.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import tempfile
import time
from pathlib import Path
from typing import Any

from builder.errors import ImgbuildError
from builder.proc import require_tool, run
from builder.targets.base import GuestNetwork
from builder.targets.local.accel import choose_accel
from builder.targets.local.agent import GuestAgent
from builder.targets.local.network import free_loopback_ports, slirp_for
from builder.targets.local.qemu_cmd import OVMF_VARS, DiskState, Layout, qemu_argv
from builder.targets.local.qmp import QMPClient
from builder.targets.local.state import process_alive, read_pidfile
from tests.pvesim.backends import AgentUnavailable, DiskFile, VMBackend
from tests.pvesim.schema import parse_property_string

NIC_MODEL = {"virtio": "virtio", "e1000": "e1000"}
VGA = {"qxl": "qxl", "std": "std", "virtio": "virtio", "none": "none", "serial0": "none", "cirrus": "std", "vmware": "std"}


class QemuBackend(VMBackend):
    """Boot each started VM in qemu-system-x86_64 (``-accel tcg`` unless KVM really works)."""

    def __init__(self, workdir: Path | None = None, *, accel: str = "auto",
                 guest_ports: tuple[int, ...] = (22, 80), qemu: str = "qemu-system-x86_64") -> None:
        require_tool(qemu, "qemu-system-x86")
        self.qemu = qemu
        self.accel = accel
        self.guest_ports = guest_ports
        # short: unix socket paths must stay under 108 bytes
        self.workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="pvesim-q-"))
        self._own = workdir is None
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.vms: dict[int, dict[str, Any]] = {}
        self._formats: dict[str, dict[str, Any]] = {}

    # --- helpers -------------------------------------------------------------------------------
    def _dir(self, vmid: int) -> Path:
        path = self.workdir / str(vmid)
        path.mkdir(parents=True, exist_ok=True, mode=0o700)
        return path

    def _layout(self, vmid: int, config: dict[str, Any], files: list[DiskFile], forwards: dict[int, int]) -> Layout:
        from tests.pvesim.schema import ApiSchema

        if not self._formats:
            props = ApiSchema.load().find("POST", "/nodes/{node}/qemu").properties
            self._formats = {k: props[k]["format"] for k in ("net0", "agent", "vga", "memory", "ipconfig0")}
            self._formats["ipconfig0"] = "pve-qm-ipconfig"
        vmdir = self._dir(vmid)
        disks: list[DiskState] = []
        cdroms: list[str | None] = []
        for f in files:
            bus = re.sub(r"\d+$", "", f.slot)
            if f.media == "cdrom":
                cdroms.append(str(f.path) if f.path else None)
            else:
                if f.format != "qcow2":
                    raise ImgbuildError(f"pvesim QemuBackend boots qcow2 volumes only; {f.slot} is {f.format}")
                disks.append(DiskState(str(f.path), bus if bus in ("virtio", "scsi", "sata", "ide") else "virtio", f.cache))
        macs, models = [], []
        for i in range(32):
            net = config.get(f"net{i}")
            if net:
                parsed = parse_property_string(self._formats["net0"], str(net))
                macs.append(str(parsed["macaddr"]).lower())
                models.append(NIC_MODEL.get(str(parsed.get("model")), "e1000"))
        network = GuestNetwork("dhcp")
        if config.get("ipconfig0"):
            ipc = parse_property_string("pve-qm-ipconfig", str(config["ipconfig0"]))
            if ipc.get("ip") not in (None, "dhcp", "manual"):
                network = GuestNetwork("static", address=ipc["ip"], gateway=ipc.get("gw"))
        agent = False
        if config.get("agent"):
            agent = parse_property_string(self._formats["agent"], str(config["agent"])).get("enabled") == "1"
        memory = 512
        if config.get("memory"):
            memory = int(parse_property_string(self._formats["memory"], str(config["memory"]))["current"])
        display = "std"
        if config.get("vga"):
            display = VGA.get(str(parse_property_string(self._formats["vga"], str(config["vga"])).get("type", "std")), "std")
        cputype = "kvm64"
        if config.get("cpu"):
            cputype = str(parse_property_string("pve-vm-cpu-conf", str(config["cpu"])).get("cputype") or "kvm64")
        order = []
        m = re.search(r"order=([^,]+)", str(config.get("boot", "")))
        for dev in (m.group(1).split(";") if m else []):
            kind = "cdrom" if any(f.slot == dev and f.media == "cdrom" for f in files) else "disk"
            if any(f.slot == dev for f in files) and kind not in order:
                order.append(kind)
        verdict = choose_accel(self.accel)
        accel = verdict.accel
        if accel == "tcg" and cputype == "host":
            cputype = "max"
        ovmf_vars = None
        if config.get("bios") == "ovmf":
            ovmf_vars = str(vmdir / "OVMF_VARS.fd")
            if not Path(ovmf_vars).exists():
                shutil.copyfile(OVMF_VARS, ovmf_vars)
        return Layout(
            name=f"pvesim-{vmid}", accel=accel, tcg_threads=verdict.tcg_threads,
            cores=int(config.get("cores", 1)) * int(config.get("sockets", 1)), memory_mib=memory,
            cpu=cputype, display=display, bios=str(config.get("bios", "seabios")), disks=tuple(disks),
            cdroms=tuple(cdroms), macs=tuple(macs), nic_models=tuple(models), slirp=slirp_for(network),
            forwards=forwards, boot=tuple(order or ["disk", "cdrom"]), agent=agent,
            console_log=str(vmdir / "console.log"), qmp_socket=str(vmdir / "qmp.sock"),
            agent_socket=str(vmdir / "qga.sock"), pidfile=str(vmdir / "qemu.pid"), ovmf_vars=ovmf_vars,
            # qemu-server QemuServer.pm config_to_command: every display but none/serial gets VNC on a unix
            # socket, with password authentication (qm vncproxy sets the password)
            extra=("-vnc", f"unix:{vmdir / 'vnc.sock'},password=on") if display != "none" else (),
        )

    def _qmp(self, vmid: int) -> QMPClient:
        return QMPClient(self._dir(vmid) / "qmp.sock").connect(wait=2.0)

    # --- VMBackend ----------------------------------------------------------------------------
    def start(self, vmid: int, config: dict[str, Any], files: list[DiskFile]) -> None:
        if self.is_running(vmid):
            raise ImgbuildError(f"VM {vmid} already running")
        vmdir = self._dir(vmid)
        for name in ("qmp.sock", "qga.sock", "qemu.pid"):
            (vmdir / name).unlink(missing_ok=True)
        forwards = dict(zip(self.guest_ports, free_loopback_ports(len(self.guest_ports)), strict=True))
        layout = self._layout(vmid, config, files, forwards)
        argv = qemu_argv(layout, self.qemu)
        (vmdir / "console.log").touch()
        run(argv, timeout=120)
        pid = read_pidfile(vmdir / "qemu.pid")
        self.vms[vmid] = {"pid": pid, "forwards": forwards, "layout": layout, "marker": layout.qmp_socket}
        self._qmp(vmid).close()  # QMP answers: QEMU is up

    def stop(self, vmid: int) -> None:
        info = self.vms.get(vmid)
        if info is None or not self.is_running(vmid):
            return
        try:
            with self._qmp(vmid) as qmp:
                qmp.execute("quit")
        except ImgbuildError:
            pass
        for sig in (None, signal.SIGTERM, signal.SIGKILL):
            if sig is not None and self.is_running(vmid):
                try:
                    os.kill(info["pid"], sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 5
            while self.is_running(vmid) and time.monotonic() < deadline:
                time.sleep(0.1)

    def shutdown(self, vmid: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        next_press = 0.0
        while self.is_running(vmid) and time.monotonic() < deadline:
            if time.monotonic() >= next_press:
                try:
                    with self._qmp(vmid) as qmp:
                        qmp.execute("system_powerdown")
                except ImgbuildError:
                    pass
                next_press = time.monotonic() + 15
            time.sleep(0.5)
        return not self.is_running(vmid)

    def is_running(self, vmid: int) -> bool:
        info = self.vms.get(vmid)
        return bool(info) and process_alive(info["pid"], info["marker"])

    def _agent(self, vmid: int) -> GuestAgent:
        if not self.is_running(vmid):
            raise AgentUnavailable("not running")
        return GuestAgent(self._dir(vmid) / "qga.sock", timeout=3.0)

    def agent_interfaces(self, vmid: int) -> list[dict[str, Any]]:
        try:
            return self._agent(vmid).network_interfaces()
        except ImgbuildError as exc:
            raise AgentUnavailable(str(exc)) from None

    def agent_hostname(self, vmid: int) -> str:
        try:
            return str((self._agent(vmid).call("guest-get-host-name") or {}).get("host-name", ""))
        except ImgbuildError as exc:
            raise AgentUnavailable(str(exc)) from None

    def agent_ping(self, vmid: int) -> None:
        try:
            self._agent(vmid).call("guest-ping")
        except ImgbuildError as exc:
            raise AgentUnavailable(str(exc)) from None

    def forwards(self, vmid: int) -> dict[int, int]:
        info = self.vms.get(vmid)
        return dict(info["forwards"]) if info and self.is_running(vmid) else {}

    def pid(self, vmid: int) -> int | None:
        info = self.vms.get(vmid)
        return info["pid"] if info and self.is_running(vmid) else None

    def vnc_display(self, vmid: int, password: str) -> socket.socket:
        """qm.pm ``vncproxy``: set_password (protocol vnc) and expire_password +30 over QMP, then connect to the
        VNC socket (``run_vnc_proxy`` waits up to 10 s for it to appear)."""
        if not self.is_running(vmid):
            raise RuntimeError(f"VM {vmid} not running")
        with self._qmp(vmid) as qmp:
            qmp.execute("set_password", {"protocol": "vnc", "password": password})
            qmp.execute("expire_password", {"protocol": "vnc", "time": "+30"})
        path = self._dir(vmid) / "vnc.sock"
        deadline = time.monotonic() + 10
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(str(path))
        except OSError as exc:
            sock.close()
            raise RuntimeError(f"unable to connect to socket '{path}' - {exc.strerror or exc}") from None
        return sock

    def console_log(self, vmid: int) -> Path:
        return self._dir(vmid) / "console.log"

    def close(self) -> None:
        for vmid in list(self.vms):
            try:
                self.stop(vmid)
            except Exception:
                pass
        if self._own:
            shutil.rmtree(self.workdir, ignore_errors=True)
