"""The qemu-system-x86_64 command line for a local VM (pure: state in, argv out)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import InvalidInput
from builder.targets.local.network import SlirpNet

OVMF_CODE = Path("/usr/share/OVMF/OVMF_CODE_4M.fd")
OVMF_VARS = Path("/usr/share/OVMF/OVMF_VARS_4M.fd")

NIC_MODELS = {"virtio": "virtio-net-pci", "e1000": "e1000"}
VGA = {"std": "std", "qxl": "qxl", "virtio": "virtio", "none": "none"}


@dataclass(frozen=True)
class DiskState:
    path: str
    bus: str = "virtio"
    cache: str = "none"


@dataclass(frozen=True)
class Layout:
    """Everything the command line needs, as plain values (what state.json holds)."""

    name: str
    accel: str  # "kvm" | "tcg"
    cores: int
    memory_mib: int
    cpu: str
    display: str
    bios: str
    disks: tuple[DiskState, ...]
    cdroms: tuple[str | None, ...]  # paths of inserted ISOs by slot
    macs: tuple[str, ...]
    nic_models: tuple[str, ...]
    slirp: SlirpNet | None  # user networking, or None with taps
    forwards: dict[int, int]  # guest port -> loopback port (first NIC; user networking only)
    boot: tuple[str, ...]
    agent: bool
    console_log: str
    qmp_socket: str
    agent_socket: str
    pidfile: str
    ovmf_vars: str | None = None
    extra: tuple[str, ...] = field(default=())
    tcg_threads: str = "single"  # "single" | "multi" (see accel.py: why single on QEMU < 8.1)
    taps: tuple[str, ...] = ()  # target lab: an existing-or-new tap device per NIC instead of user networking
    netns: str | None = None  # target lab: QEMU runs in this network namespace (where the taps are)


def boot_indexes(boot: tuple[str, ...], n_disks: int, n_cdroms: int) -> tuple[list[int | None], list[int | None]]:
    """bootindex per disk and per CD-ROM following *boot* ("disk", "cdrom" in priority order)."""
    disks: list[int | None] = [None] * n_disks
    cds: list[int | None] = [None] * n_cdroms
    index = 1
    for kind in boot:
        if kind == "disk":
            for i in range(n_disks):
                if disks[i] is None:
                    disks[i] = index
                    index += 1
        elif kind == "cdrom":
            for i in range(n_cdroms):
                if cds[i] is None:
                    cds[i] = index
                    index += 1
        else:
            raise InvalidInput(f"boot device {kind!r} is not 'disk' or 'cdrom'")
    return disks, cds


def qemu_argv(layout: Layout, qemu: str = "qemu-system-x86_64") -> list[str]:
    lay = layout
    if lay.tcg_threads not in ("single", "multi"):
        raise InvalidInput(f"TCG thread mode {lay.tcg_threads!r} is not 'single' or 'multi'")
    accel = "kvm" if lay.accel == "kvm" else f"tcg,thread={lay.tcg_threads}"
    wrapper = ["ip", "netns", "exec", lay.netns] if lay.netns else []
    argv = [
        *wrapper, qemu,
        "-name", f"{lay.name},process=imgbuild-{lay.name}",
        "-nodefaults", "-no-user-config",
        "-machine", "q35",
        "-accel", accel,
        "-cpu", lay.cpu,
        "-smp", f"cores={lay.cores},threads=1,sockets=1",
        "-m", str(lay.memory_mib),
        "-rtc", "base=utc",
        "-display", "none",
        "-vga", VGA.get(lay.display, "std"),
        "-chardev", f"file,id=serial0,path={lay.console_log},append=on",
        "-serial", "chardev:serial0",
        "-chardev", f"socket,id=qmp,path={lay.qmp_socket},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-device", "virtio-rng-pci",
        "-daemonize", "-pidfile", lay.pidfile,
    ]  # fmt: skip
    if lay.bios == "ovmf":
        if not lay.ovmf_vars:
            raise InvalidInput("an OVMF VM needs its own copy of OVMF_VARS")
        argv += [
            "-drive", f"if=pflash,format=raw,unit=0,file={OVMF_CODE},readonly=on",
            "-drive", f"if=pflash,format=raw,unit=1,file={lay.ovmf_vars}",
        ]  # fmt: skip
    disk_idx, cd_idx = boot_indexes(lay.boot, len(lay.disks), len(lay.cdroms))
    scsi = any(d.bus == "scsi" for d in lay.disks)
    if scsi:
        argv += ["-device", "virtio-scsi-pci,id=scsi0"]
    for i, disk in enumerate(lay.disks):
        argv += ["-drive", f"if=none,id=drive-disk{i},file={disk.path},format=qcow2,cache={disk.cache},discard=unmap"]
        dev = {
            "virtio": f"virtio-blk-pci,drive=drive-disk{i},id=disk{i}",
            "scsi": f"scsi-hd,bus=scsi0.0,drive=drive-disk{i},id=disk{i}",
            "sata": f"ide-hd,bus=ide.{2 + i},drive=drive-disk{i},id=disk{i}",
            "ide": f"ide-hd,bus=ide.{2 + i},drive=drive-disk{i},id=disk{i}",
        }[disk.bus]
        if disk_idx[i] is not None:
            dev += f",bootindex={disk_idx[i]}"
        argv += ["-device", dev]
    for i, iso in enumerate(lay.cdroms):
        drive = f"if=none,id=drive-cd{i},media=cdrom,readonly=on"
        if iso:
            drive += f",file={iso},format=raw"
        dev = f"ide-cd,bus=ide.{i},drive=drive-cd{i},id=cdrom{i}"
        if cd_idx[i] is not None:
            dev += f",bootindex={cd_idx[i]}"
        argv += ["-drive", drive, "-device", dev]
    for i, (mac, model) in enumerate(zip(lay.macs, lay.nic_models, strict=True)):
        if lay.taps:  # QEMU makes the tap and removes it when it exits, whatever way it exits
            netdev = f"tap,id=net{i},ifname={lay.taps[i]},script=no,downscript=no"
        elif lay.slirp is not None:
            netdev = f"user,id=net{i},{lay.slirp.netdev_options(lay.forwards if i == 0 else {})}"
        else:
            raise InvalidInput("a NIC needs user networking or a tap")
        # romfile= (none): the firmware loads no network-boot ROM, which no boot order here uses (0.5 s under TCG).
        argv += ["-netdev", netdev, "-device", f"{NIC_MODELS[model]},netdev=net{i},mac={mac},id=nic{i},romfile="]
    if lay.agent:
        argv += [
            "-chardev", f"socket,id=qga0,path={lay.agent_socket},server=on,wait=off",
            "-device", "virtio-serial-pci,id=vserial0",
            "-device", "virtserialport,bus=vserial0.0,chardev=qga0,name=org.qemu.guest_agent.0",
        ]  # fmt: skip
    argv += list(lay.extra)
    return argv
