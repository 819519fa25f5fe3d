"""The one small interface every target implements. The pipeline speaks only to this.

A target stages artifacts (ISOs, golden disk images), creates VMs from a ``VMSpec``, drives their
lifecycle and tells the pipeline how to reach a guest port from this machine.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from builder.progress import NullProgress, Progress

ArtifactKind = Literal["iso", "image"]


@dataclass(frozen=True)
class Staged:
    """An artifact as the target knows it: a local path or a PVE volume id (``local:iso/x.iso``)."""

    kind: ArtifactKind
    ref: str
    sha256: str
    size: int
    uploaded: bool = False  # False when the target already had it (content-addressed re-run)
    location: str = ""  # where it lives when the target has several places (a PVE node; "" shared)


@dataclass(frozen=True)
class DiskSpec:
    size_bytes: int
    bus: Literal["virtio", "scsi", "sata", "ide"] = "virtio"
    cache: Literal["none", "writethrough", "writeback", "directsync", "unsafe"] = "none"
    source: Staged | None = None  # golden image to copy/import; None means a blank disk


@dataclass(frozen=True)
class NicSpec:
    mac: str
    model: Literal["virtio", "e1000"] = "virtio"
    bridge: str = "vmbr0"
    vlan: int | None = None
    firewall: bool = False


@dataclass(frozen=True)
class GuestNetwork:
    """What the guest will do on its NIC, so a target can provide a matching network.

    mode: ``static`` (address/prefix/gateway given), ``dhcp`` or ``nat``.
    The local target builds a user-mode network whose subnet matches a static recipe.
    """

    mode: Literal["static", "dhcp", "nat"]
    address: str | None = None  # "192.168.1.250/24"
    gateway: str | None = None
    nameservers: tuple[str, ...] = ()
    nat: bool = False  # behind the host's NAT (the recipe's mode nat): a target may have to provide it


@dataclass(frozen=True)
class VMSpec:
    name: str  # recipe name, or clone name; unique per target
    cores: int = 2
    memory_mib: int = 2048
    cpu: str = "kvm64"
    display: Literal["qxl", "std", "virtio", "none"] = "std"
    bios: Literal["seabios", "ovmf"] = "seabios"
    disks: tuple[DiskSpec, ...] = ()
    cdroms: tuple[Staged | None, ...] = ()  # slot order; None is an empty drive
    nics: tuple[NicSpec, ...] = ()
    network: GuestNetwork = GuestNetwork("dhcp")
    boot: tuple[Literal["disk", "cdrom"], ...] = ("disk", "cdrom")
    agent: bool = True
    guest_ports: tuple[int, ...] = (22,)  # TCP ports the pipeline will need to reach
    description: str = ""
    vmid: int | None = None  # PVE only: requested id (None: next free)
    node: str | None = None  # PVE only: the cluster node to run on (None: the target's setting, else chosen)
    # Content key of everything the VM was built from (seed, disk image, installer, hardware). Targets keep it
    # with the VM so a later make of an unchanged recipe can tell the VM is up to date (built_from).
    inputs: str = ""


@dataclass
class VM:
    """A VM that exists on a target. ``data`` holds target-private state (pid, vmid, sockets ...)."""

    name: str
    target: str
    ident: str  # local: the VM directory; pve: vmid
    data: dict = field(default_factory=dict)
    # Why imgbuild cannot use this VM's record (e.g. a corrupt state file), or "". A broken VM shows as
    # such in ``status``; ``destroy`` still removes it; everything else refuses it with this reason.
    broken: str = ""


@dataclass(frozen=True)
class Endpoint:
    """How this machine reaches a guest TCP port (local: a loopback forward; pve: the guest address)."""

    host: str
    port: int
    via: str = ""  # e.g. "ssh jump host pve-jump" or "loopback forward to 192.168.1.250:22"


class Target(abc.ABC):
    name: str = "target"
    address_timeout: float | None = None  # seconds to wait for a booted guest's address (None: the pipeline's)

    def preflight(self, spec: VMSpec, *, media: tuple[ArtifactKind, ...] = (), source: VM | None = None,  # noqa: B027
                  console: bool = False, progress: Progress = NullProgress()) -> None:
        """Check, before anything is uploaded or created, that this target can run *spec* (where it will run,
        storages, networks, the credentials' privileges); raise ImgbuildError naming what to change.
        *media*: the artifacts the job will stage; *source*: the VM a clone is made from; *console*: the job
        reads the VM's display. The default checks nothing."""

    # --- artifacts -------------------------------------------------------------------------
    @abc.abstractmethod
    def stage(self, path: Path, kind: ArtifactKind, *, label: str, progress: Progress = NullProgress()) -> Staged:
        """Make *path* available to VMs (copy or upload). Content-addressed: skip if already there."""

    @abc.abstractmethod
    def unstage(self, staged: Staged) -> None:
        """Remove a staged artifact (e.g. a seed ISO holding a private host key)."""

    def staged_copy(self, path: Path, kind: ArtifactKind, *, label: str) -> Staged | None:
        """The copy of *path* this target already holds (what ``stage`` would reuse), or None. Never
        transfers anything: a re-run that reuses a VM finds the seed an interrupted run left staged."""
        return None

    # --- lifecycle -------------------------------------------------------------------------
    @abc.abstractmethod
    def create_vm(self, spec: VMSpec, *, progress: Progress = NullProgress()) -> VM: ...

    @abc.abstractmethod
    def find_vm(self, name: str) -> VM | None:
        """The VM of that name left by an earlier run (``make --keep``), if any."""

    @abc.abstractmethod
    def list_vms(self) -> list[VM]:
        """Every VM (and template) imgbuild made on this target, by name."""

    def built_from(self, vm: VM) -> str | None:
        """The ``VMSpec.inputs`` key *vm* was created with (None when unknown)."""
        return vm.data.get("inputs") or None

    def is_template(self, vm: VM) -> bool:
        return bool(vm.data.get("template"))

    @abc.abstractmethod
    def start(self, vm: VM, *, progress: Progress = NullProgress()) -> None:
        """Power *vm* on (nothing when it runs); how it runs (e.g. the accelerator) goes to *progress*."""

    @abc.abstractmethod
    def is_running(self, vm: VM) -> bool: ...

    @abc.abstractmethod
    def wait_stopped(self, vm: VM, timeout: float, *, progress: Progress = NullProgress()) -> None:
        """Wait for the guest to power itself off (installer end). Raise ImgbuildError on timeout."""

    @abc.abstractmethod
    def shutdown(self, vm: VM, timeout: float = 120) -> None:
        """Clean shutdown (ACPI / guest agent), falling back to a hard stop after *timeout*."""

    @abc.abstractmethod
    def stop(self, vm: VM) -> None:
        """Hard stop."""

    @abc.abstractmethod
    def destroy(self, vm: VM) -> None:
        """Stop if running and remove the VM, its disks and its staged seed ISOs (they hold its private
        host key)."""

    # --- media -----------------------------------------------------------------------------
    @abc.abstractmethod
    def set_cdrom(self, vm: VM, slot: int, staged: Staged | None) -> None:
        """Insert *staged* into CD-ROM *slot*, or eject with None."""

    @abc.abstractmethod
    def set_boot(self, vm: VM, order: tuple[str, ...]) -> None: ...

    # --- guest -----------------------------------------------------------------------------
    @abc.abstractmethod
    def guest_addresses(self, vm: VM, timeout: float) -> list[str]:
        """IPv4/IPv6 addresses reported by the guest agent, loopback and link-local removed.

        Retries until *timeout*; raises ImgbuildError with the last reason if none appear.
        """

    @abc.abstractmethod
    def endpoint(self, vm: VM, guest_address: str, port: int) -> Endpoint:
        """How to reach *port* on the guest from this machine."""

    @abc.abstractmethod
    def screenshot(self, vm: VM, dest: Path) -> Path:
        """Save the VM's display as a PNG at *dest*."""

    @abc.abstractmethod
    def console_log(self, vm: VM) -> Path | None:
        """Path to the serial console log, if this target keeps one."""

    # --- golden images ---------------------------------------------------------------------
    @abc.abstractmethod
    def make_template(self, vm: VM) -> None: ...

    @abc.abstractmethod
    def clone(self, vm: VM, name: str, *, full: bool = True, seed: Staged | None = None,
              network: GuestNetwork | None = None) -> VM:
        """A new stopped VM *name* from *vm* (a full copy, or linked to a template) with its own MACs
        (``clone_mac``), *seed* in CD-ROM slot 0 and, when given, its own *network* (e.g. another static
        address) where the target records addresses."""

    @abc.abstractmethod
    def clone_mac(self, name: str) -> str:
        """The MAC address the first NIC of a clone called *name* gets, known before cloning so the clone's
        seed can match its network config on it."""

    # --- releases --------------------------------------------------------------------------
    # A release is a template named <recipe>-<YYYYMMDD>-<n> carrying labels: the recipe's name and, on the
    # newest good one, ``latest`` (``candidate`` while a release is being proven). PVE keeps labels as tags
    # (beside ``imgbuild``); the local target records them in the VM's state. builder/pipeline/releases.py
    # holds the rules; targets only store labels, name dependent VMs and keep a release's manifest.
    @abc.abstractmethod
    def labels(self, vm: VM) -> frozenset[str]:
        """The release labels of *vm* (empty for a VM that is no release)."""

    @abc.abstractmethod
    def set_labels(self, vm: VM, labels: Iterable[str]) -> None:
        """Replace *vm*'s release labels in one step (a template too)."""

    @abc.abstractmethod
    def dependents(self, vm: VM) -> list[str]:
        """Names of the VMs whose disks depend on template *vm* (linked clones): it cannot go while they exist."""

    @abc.abstractmethod
    def store_manifest(self, vm: VM, manifest: str) -> str:
        """Keep a release's package manifest (JSON text) with its template; returns where it went."""

    @abc.abstractmethod
    def read_manifest(self, vm: VM) -> str | None:
        """The manifest stored with *vm* by ``store_manifest``, if any."""

    # --- installer -------------------------------------------------------------------------
    def installer_log_host(self, network: GuestNetwork) -> str | None:
        """Address the installer inside a guest on *network* should send its syslog to so that it
        reaches 127.0.0.1 on this machine, or None when this target cannot carry it."""
        return None
