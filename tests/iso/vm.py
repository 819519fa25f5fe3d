"""A QEMU guest for installer boot tests: TCG (threaded as the local target runs it), 2 GiB, a blank virtio
disk, the ISO as CD-ROM, SeaBIOS or OVMF, serial console to a file, user networking shaped like the recipe's
static network, and a pcap of everything the guest sends. Always stopped on exit."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from builder.targets.local.accel import choose_accel

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")
# Secure Boot: SMM-protected flash and Microsoft's keys enrolled (Debian's shim is signed by them).
OVMF_SECBOOT_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.secboot.fd")
OVMF_MS_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.ms.fd")
Firmware = Literal["bios", "uefi", "uefi-secureboot"]


@dataclass(frozen=True)
class SlirpPlan:
    """QEMU user networking that matches a static recipe network.

    slirp's DNS proxy answers at ``dns``; packets to ``host`` reach the host's loopback (so the
    installer's syslog goes to ``host``). QEMU refuses dns == host, so when the recipe's name server is
    its gateway, the slirp host gets another free address in the subnet (routing works either way:
    slirp answers ARP for its addresses and forwards whatever reaches it).
    """

    net: str
    host: str
    dns: str
    guest: str

    @property
    def log_host(self) -> str:
        return self.host

    def netdev(self, ident: str) -> str:
        return f"user,id={ident},net={self.net},host={self.host},dns={self.dns}"


def slirp_plan(address: str, gateway: str, nameserver: str) -> SlirpPlan:
    iface = ipaddress.ip_interface(address)
    net = iface.network
    guest = str(iface.ip)
    dns = nameserver if ipaddress.ip_address(nameserver) in net else gateway
    taken = {guest, dns}
    host = gateway if gateway not in taken else next(str(h) for h in net.hosts() if str(h) not in taken | {gateway})
    return SlirpPlan(net=str(net), host=host, dns=dns, guest=guest)


class InstallerVM:
    def __init__(self, iso: Path, workdir: Path, *, firmware: Firmware, plan: SlirpPlan, memory_mib: int = 2048) -> None:
        self.iso = Path(iso)
        self.dir = Path(workdir)
        self.firmware = firmware
        self.plan = plan
        self.memory_mib = memory_mib
        self.serial = self.dir / "serial.log"
        self.pcap = self.dir / "guest.pcap"
        self.qemu_log = self.dir / "qemu.log"
        self.disk = self.dir / "disk.qcow2"
        self.proc: subprocess.Popen | None = None
        self.started = 0.0

    def command(self) -> list[str]:
        cmd = [
            "qemu-system-x86_64", "-accel", f"tcg,thread={choose_accel('tcg').tcg_threads}",
            "-m", str(self.memory_mib), "-smp", "2",
            "-display", "none", "-vga", "std", "-monitor", "none", "-no-reboot",
            "-serial", f"file:{self.serial}",
            "-drive", f"file={self.disk},if=virtio,format=qcow2,cache=unsafe",
            "-drive", f"file={self.iso},media=cdrom,readonly=on",
            "-boot", "order=d",
            "-netdev", self.plan.netdev("net0"),
            "-device", "virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56",
            "-object", f"filter-dump,id=dump0,netdev=net0,file={self.pcap}",
            "-object", "rng-random,id=rng0,filename=/dev/urandom",
            "-device", "virtio-rng-pci,rng=rng0",
        ]
        if self.firmware in ("uefi", "uefi-secureboot"):
            secure = self.firmware == "uefi-secureboot"
            vars_copy = self.dir / "OVMF_VARS.fd"
            shutil.copyfile(OVMF_MS_VARS if secure else OVMF_VARS, vars_copy)
            if secure:
                cmd += ["-machine", "q35,smm=on", "-global", "driver=cfi.pflash01,property=secure,value=on"]
            cmd += [
                "-drive", f"if=pflash,format=raw,unit=0,readonly=on,file={OVMF_SECBOOT_CODE if secure else OVMF_CODE}",
                "-drive", f"if=pflash,format=raw,unit=1,file={vars_copy}",
            ]
        return cmd

    def __enter__(self) -> InstallerVM:
        self.dir.mkdir(parents=True, exist_ok=True)
        subprocess.run(["qemu-img", "create", "-f", "qcow2", str(self.disk), "8G"], check=True, capture_output=True)
        with open(self.qemu_log, "wb") as log:
            self.proc = subprocess.Popen(self.command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def elapsed(self) -> float:
        return time.monotonic() - self.started

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def serial_bytes(self) -> bytes:
        try:
            return self.serial.read_bytes()
        except FileNotFoundError:
            return b""

    def serial_tail(self, n: int = 3000) -> str:
        text = self.serial_bytes()[-n:].decode("utf-8", "replace")
        return "".join(ch for ch in text if ch.isprintable() or ch == "\n")

    def wait_exit(self, timeout: float) -> int | None:
        assert self.proc is not None
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
