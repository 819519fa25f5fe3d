"""The local target: VMs in qemu-system-x86_64 on this machine.

A VM named N lives in ``OUT/N/``: its serial console in ``OUT/N/console.log`` and everything else
(disks, OVMF variables, QMP and guest-agent sockets, state.json) in ``OUT/N/vm/``. QEMU runs detached
(``-daemonize``: its own session), so a kept VM survives imgbuild; ``find_vm`` reattaches from the
state file. Networking is user-mode with a subnet that matches the recipe; guest ports are forwarded
from loopback ports only. The same target named ``lab`` puts the NICs on taps in a lab's bridges instead
(lab_nics.py); each VM's record says which network it has, so any command finds its way to it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from builder import qcow2
from builder.cachedir import cache_dir, cached_sha256
from builder.errors import CommandFailed, GuestCrashed, ImgbuildError, InvalidInput
from builder.fsutil import part_path, sweep_parts, write_atomic
from builder.proc import require_tool, run
from builder.progress import NullProgress, Progress
from builder.targets.base import VM, ArtifactKind, Endpoint, GuestNetwork, Staged, Target, VMSpec
from builder.targets.console import panic_since
from builder.targets.local import lab_nics, png
from builder.targets.local.accel import ACCEL_CHOICES, choose_accel, qemu_version, tcg_threads
from builder.targets.local.agent import GuestAgent, usable_addresses
from builder.targets.local.network import SlirpNet, free_loopback_ports, slirp_for
from builder.targets.local.prune import unused_staged_images
from builder.targets.local.qemu_cmd import OVMF_CODE, OVMF_VARS, DiskState, Layout, boot_indexes, qemu_argv
from builder.targets.local.qmp import QMPClient, QMPError
from builder.targets.local.rundir import ensure_private, socket_dir
from builder.targets.local.state import (
    BrokenState,
    ExtraForward,
    LabNics,
    VMState,
    load_state,
    o_direct_supported,
    process_alive,
    read_pidfile,
    save_state,
)

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
RELEASE_MANIFEST = "release-manifest.json"  # a release's package manifest, kept with its template
# Seconds an unused staged *copy* is kept (another make may be about to create a VM on it). Only copies need
# it: where the image cache shares the out dir's filesystem, staging hard-links, and a staged image that is
# the only name of its bytes is an old image for certain.
STAGED_IMAGE_GRACE = 600.0


def derive_mac(name: str, index: int = 0) -> str:
    """A stable locally administered MAC in QEMU's 52:54:00 range for NIC *index* of VM *name*."""
    digest = hashlib.sha256(f"{name}/{index}".encode()).digest()
    return "52:54:00:" + ":".join(f"{b:02x}" for b in digest[:3])


@dataclass
class LocalVM(VM):
    """A local VM with its typed state (None when ``broken``: its state.json is unusable)."""

    state: VMState | None = None


class LocalTarget(Target):
    name = "local"

    def __init__(self, out_root: Path, *, accel: str = "auto", lab: str | None = None) -> None:
        """*lab*: the target ``lab``: new VMs get their NICs in that lab's bridges instead of user networking."""
        if accel not in ACCEL_CHOICES:
            raise InvalidInput(f"accel {accel!r} is not one of {', '.join(ACCEL_CHOICES)}")
        self.out_root = Path(out_root).resolve()
        self.accel = accel
        self.qemu = "qemu-system-x86_64"
        self.lab = lab
        if lab is not None:
            self.name = "lab"

    # --- paths ---------------------------------------------------------------------------------
    def vm_dir(self, name: str) -> Path:
        if not _NAME.match(name):
            raise InvalidInput(f"VM name {name!r} must be letters, digits, '.', '_' or '-' (max 63)")
        return self.out_root / name / "vm"

    @property
    def staging_dir(self) -> Path:
        return self.out_root / ".staged"

    # --- artifacts -----------------------------------------------------------------------------
    def stage(self, path: Path, kind: ArtifactKind, *, label: str, progress: Progress = NullProgress()) -> Staged:
        """Content-addressed hard link (or copy, across filesystems) into OUT/.staged/."""
        path = Path(path).resolve()
        if not path.is_file():
            raise ImgbuildError(f"cannot stage {path}: no such file")
        digest = cached_sha256(path)
        size = path.stat().st_size
        dest = self.staging_dir / _staged_name(digest, label, kind)
        if dest.exists() and dest.stat().st_size == size:
            return Staged(kind, str(dest), digest, size, uploaded=False)
        self.staging_dir.mkdir(parents=True, exist_ok=True)
        sweep_parts(self.staging_dir)  # copies a killed run left half-made
        with part_path(dest, mode=0o444 if kind == "image" else 0o600) as tmp:
            try:
                tmp.unlink()
                os.link(path, tmp)  # the same bytes under another name, renamed into place at once
            except OSError:
                progress.step(f"staging {path.name} (copy)")
                shutil.copyfile(path, tmp)
                os.chmod(tmp, 0o444 if kind == "image" else 0o600)
            os.replace(tmp, dest)
        return Staged(kind, str(dest), digest, size, uploaded=True)

    def staged_copy(self, path: Path, kind: ArtifactKind, *, label: str) -> Staged | None:
        path = Path(path)
        if not path.is_file():
            return None
        digest = cached_sha256(path)
        dest = self.staging_dir / _staged_name(digest, label, kind)
        if dest.is_file() and dest.stat().st_size == path.stat().st_size:
            return Staged(kind, str(dest), digest, dest.stat().st_size, uploaded=False)
        return None

    def unstage(self, staged: Staged) -> None:
        ref = Path(staged.ref)
        if ref.parent == self.staging_dir:
            ref.unlink(missing_ok=True)

    # --- lifecycle -----------------------------------------------------------------------------
    def create_vm(self, spec: VMSpec, *, progress: Progress = NullProgress()) -> VM:
        require_tool(self.qemu, "qemu-system-x86")
        require_tool("qemu-img", "qemu-utils")
        vmdir = self.vm_dir(spec.name)
        if not spec.nics:
            raise InvalidInput(f"VM {spec.name} has no NIC; the local target needs one for user-mode networking")
        slirp = slirp_for(spec.network) if self.lab is None else None
        nics = lab_nics.lab_nics(self.lab, spec) if self.lab is not None else None
        old = self._load(vmdir) if vmdir.exists() else None
        if old is not None:
            existing = self._vm(spec.name, old)
            if self.is_running(existing):
                raise ImgbuildError(
                    f"a VM named {spec.name} is already running (pid {old.pid})",
                    detail=f"remove it first: imgbuild destroy {spec.name}",
                )
            if old.template:
                raise ImgbuildError(f"{spec.name} is a template; destroy it first to reuse the name")
        if vmdir.exists():
            progress.note(f"removing the stopped VM left in {vmdir}")
            shutil.rmtree(vmdir)
        vmdir.mkdir(parents=True)
        os.chmod(vmdir, 0o700)
        try:
            state = self._create_in(vmdir, spec, slirp, nics, progress)
        except BaseException:  # a failed or interrupted create leaves no half-made VM (no QEMU runs yet)
            shutil.rmtree(vmdir, ignore_errors=True)
            raise
        self._prune_staged_images(progress)
        return self._vm(spec.name, state)

    def _create_in(self, vmdir: Path, spec: VMSpec, slirp: SlirpNet | None, nics: LabNics | None,
                   progress: Progress) -> VMState:
        disks = []
        for i, disk in enumerate(spec.disks):
            path = vmdir / f"disk{i}.qcow2"
            on = f", on {Path(disk.source.ref).name}" if disk.source else ""
            progress.step(f"creating disk {i} ({disk.size_bytes // 1024**3} GiB{on})")
            if disk.cache == "none":
                self._check_o_direct(vmdir, disk.source)
            if disk.source is not None:
                backing = Path(disk.source.ref)
                size = max(disk.size_bytes, _virtual_size(backing))
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", backing, path, str(size)])
            else:
                run(["qemu-img", "create", "-q", "-f", "qcow2", path, str(disk.size_bytes)])
            disks.append(DiskState(str(path), disk.bus, disk.cache))

        ovmf_vars = None
        if spec.bios == "ovmf":
            if not OVMF_CODE.exists() or not OVMF_VARS.exists():
                raise ImgbuildError(f"OVMF firmware not found ({OVMF_CODE}): install the Debian package 'ovmf'")
            ovmf_vars = str(vmdir / "OVMF_VARS.fd")
            shutil.copyfile(OVMF_VARS, ovmf_vars)

        console = self.out_root / spec.name / "console.log"
        console.write_bytes(b"")
        state = VMState(
            name=spec.name,
            spec=_jsonable(asdict(spec)),
            cores=spec.cores,
            memory_mib=spec.memory_mib,
            cpu=spec.cpu,
            display=spec.display,
            bios=spec.bios,
            disks=disks,
            cdroms=[c.ref if c else None for c in spec.cdroms],
            macs=[n.mac or derive_mac(spec.name, i) for i, n in enumerate(spec.nics)],
            nic_models=[n.model for n in spec.nics],
            slirp=slirp,
            lab=nics,
            guest_ports=list(spec.guest_ports),
            boot=list(spec.boot),
            agent=spec.agent,
            ovmf_vars=ovmf_vars,
            console_log=str(console),
            sockdir=str(socket_dir(vmdir)),
            inputs=spec.inputs,
        )
        save_state(vmdir, state)
        return state

    def find_vm(self, name: str) -> VM | None:
        """The VM called *name*; one whose state.json is unusable comes back ``broken`` (destroy removes it)."""
        try:
            state = self._load(self.vm_dir(name))
        except BrokenState as exc:
            return LocalVM(name=name, target=self.name, ident=str(self.vm_dir(name)), broken=exc.message)
        return self._vm(name, state) if state is not None else None

    def list_vms(self) -> list[VM]:
        """This target's VMs: on user networking for ``local``, in a lab for ``lab`` (and broken ones on both)."""
        return [vm for vm in self._local_vms() if vm.state is None or (vm.state.lab is None) == (self.lab is None)]

    def _local_vms(self) -> list[LocalVM]:
        vms = []
        for vmdir in sorted(self.out_root.glob("*/vm")):
            vm = self.find_vm(vmdir.parent.name) if _NAME.match(vmdir.parent.name) else None
            if isinstance(vm, LocalVM):
                vms.append(vm)
        return vms

    def start(self, vm: VM, *, progress: Progress = NullProgress()) -> None:
        state = self._state(vm)
        if state.template:
            raise ImgbuildError(f"{vm.name} is a template; clone it to boot a VM")
        if self.is_running(vm):
            return
        progress.step("choosing the accelerator (KVM probe, cached per host boot)")
        verdict = choose_accel(self.accel, qemu=self.qemu)
        if verdict.accel == "tcg" and self.accel == "auto":
            progress.note(f"using TCG (software emulation): {verdict.reason}")
        if verdict.accel == "tcg":
            progress.note(f"TCG {verdict.tcg_threads}-threaded: {verdict.threads_reason}")
        sockdir = ensure_private(Path(state.sockdir))
        vmdir = self.vm_dir(vm.name)
        console = Path(state.console_log)
        console_offset = console.stat().st_size if console.exists() else 0
        last_error: CommandFailed | None = None
        if state.lab is not None:
            lab_nics.stop_forwards(state.lab)  # a forward left by a QEMU that died on its own
            lab_nics.check_bridges(state.lab)
        for _attempt in range(3):  # a forward port taken between choosing and binding: choose again
            ports = free_loopback_ports(len(state.guest_ports)) if state.lab is None else []
            state.forwards = dict(zip(state.guest_ports, ports, strict=False))
            state.extra_forwards = []
            state.accel = verdict.accel
            state.tcg_threads = verdict.tcg_threads
            for name in ("qmp.sock", "qga.sock"):
                (sockdir / name).unlink(missing_ok=True)
            pidfile = vmdir / "qemu.pid"
            pidfile.unlink(missing_ok=True)
            argv = qemu_argv(self._layout(vm.name, state), self.qemu)
            progress.step(f"starting QEMU ({verdict.describe()}) for {vm.name}")
            write_atomic(vmdir / "qemu.argv", json.dumps(argv, indent=1) + "\n")
            try:
                run(argv, timeout=120)
            except CommandFailed as exc:
                last_error = exc
                if "host forwarding" in exc.detail.lower() or "hostfwd" in exc.detail.lower():
                    continue
                break
            state.pid = read_pidfile(pidfile)
            state.console_offset = console_offset  # what this boot writes to the (appended) console log
            self._save(vm, state)
            self._qmp(vm, wait=10).close()  # answers: the VM is up
            if state.lab is not None:
                try:
                    lab_nics.plug_all(vm.name, state.lab)
                except BaseException:
                    self.stop(vm)
                    raise
            return
        assert last_error is not None
        raise ImgbuildError(
            f"QEMU could not start VM {vm.name}: {_first_line(last_error.detail) or last_error.message}",
            detail=f"{last_error.detail}\ncommand line: {vmdir / 'qemu.argv'}",
        )

    def is_running(self, vm: VM) -> bool:
        return self._pid(vm) is not None

    def _pid(self, vm: VM) -> int | None:
        """The VM's live QEMU process: the recorded pid, else QEMU's own pid file (an imgbuild interrupted
        while QEMU daemonized never recorded it). The QMP socket path on the command line guards against
        a reused pid."""
        state = self._state(vm)
        marker = str(Path(state.sockdir) / "qmp.sock")
        for pid in (state.pid, read_pidfile(self.vm_dir(vm.name) / "qemu.pid")):
            if process_alive(pid, marker):
                return pid
        return None

    def wait_stopped(self, vm: VM, timeout: float, *, progress: Progress = NullProgress()) -> None:
        start = time.monotonic()
        last_note = 0.0
        while self.is_running(vm):
            elapsed = time.monotonic() - start
            if elapsed > timeout:
                raise ImgbuildError(
                    f"{vm.name} did not power off within {timeout:.0f}s", detail=self._console_tail(vm)
                )
            if elapsed - last_note >= 5:
                progress.step(f"waiting for {vm.name} to power off ({elapsed:.0f}s)")
                last_note = elapsed
            time.sleep(0.5)
        self._mark_stopped(vm)

    def shutdown(self, vm: VM, timeout: float = 120) -> None:
        """ACPI power button (repeated: a guest still booting may miss the first), then a hard stop."""
        if not self.is_running(vm):
            self._mark_stopped(vm)
            return
        deadline = time.monotonic() + timeout
        next_press = 0.0
        while self.is_running(vm) and time.monotonic() < deadline:
            if time.monotonic() >= next_press:
                try:
                    with self._qmp(vm) as qmp:
                        qmp.execute("system_powerdown")
                except ImgbuildError:
                    pass  # QEMU exiting between the check and the command
                next_press = time.monotonic() + 15
            time.sleep(0.5)
        if self.is_running(vm):
            self.stop(vm)
        else:
            self._mark_stopped(vm)

    def stop(self, vm: VM) -> None:
        pid = self._pid(vm)
        if pid is not None:
            try:
                with self._qmp(vm) as qmp:
                    qmp.execute("quit")
            except ImgbuildError:
                pass
            for sig, wait in ((None, 5.0), (signal.SIGTERM, 5.0), (signal.SIGKILL, 5.0)):
                if sig is not None and pid and self.is_running(vm):
                    try:
                        os.kill(pid, sig)
                    except ProcessLookupError:
                        pass
                deadline = time.monotonic() + wait
                while self.is_running(vm) and time.monotonic() < deadline:
                    time.sleep(0.1)
            if self.is_running(vm):
                raise ImgbuildError(f"QEMU process {pid} of {vm.name} does not die")
        self._mark_stopped(vm)

    def destroy(self, vm: VM) -> None:
        vmdir = self.vm_dir(vm.name)
        try:
            state = self._load(vmdir)
        except BrokenState:
            self._destroy_broken(vm.name)
            return
        if state is None:
            return
        vm = self._vm(vm.name, state)
        clones = [c for c in state.linked_clones if self.find_vm(c) is not None]
        if clones:
            raise ImgbuildError(
                f"{vm.name} is the template of linked clones: {', '.join(clones)}", detail="destroy those first"
            )
        self.stop(vm)
        if state.template_of:
            try:
                parent = self._load(self.vm_dir(state.template_of))
            except BrokenState:
                parent = None
            if parent is not None and vm.name in parent.linked_clones:
                parent.linked_clones.remove(vm.name)
                save_state(self.vm_dir(state.template_of), parent)
        sockdir = Path(state.sockdir)
        if sockdir != vmdir and sockdir.exists():
            shutil.rmtree(sockdir, ignore_errors=True)
        shutil.rmtree(vmdir)
        self._remove_staged_seeds(vm.name)
        self._prune_staged_images()

    def _remove_staged_seeds(self, name: str) -> None:
        """A VM's seed ISO holds its private host key: when the VM goes, its staged seeds go, whether still
        in a drive or left staged by a run that ended before attaching or forgetting it."""
        if not self.staging_dir.is_dir():
            return
        pattern = re.compile(r"[0-9a-f]{16}-" + re.escape(_safe_label(f"{name}-seed", "iso")) + r"\.iso")
        in_use = {c for vm in self._local_vms() if vm.state is not None for c in vm.state.cdroms if c}
        for iso in self.staging_dir.glob("*.iso"):
            if pattern.fullmatch(iso.name) and str(iso) not in in_use:
                iso.unlink(missing_ok=True)

    def _destroy_broken(self, name: str) -> None:
        """Remove a VM whose state.json is unusable: its QEMU (found from the pid file, whose path is on
        QEMU's command line), its socket directory and its directory. Linked clones are looked up from
        their own records, since the template's list of them is lost."""
        vmdir = self.vm_dir(name)
        clones = [vm.name for vm in self._local_vms() if vm.state is not None and vm.state.template_of == name]
        if clones:
            raise ImgbuildError(f"{name} is the template of linked clones: {', '.join(clones)}",
                                detail="destroy those first")
        pidfile = vmdir / "qemu.pid"
        pid = read_pidfile(pidfile)
        for sig in (signal.SIGTERM, signal.SIGKILL):
            if not process_alive(pid, str(pidfile)):
                break
            assert pid is not None
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
            deadline = time.monotonic() + 5
            while process_alive(pid, str(pidfile)) and time.monotonic() < deadline:
                time.sleep(0.1)
        if process_alive(pid, str(pidfile)):
            raise ImgbuildError(f"QEMU process {pid} of {name} does not die")
        sockdir = socket_dir(vmdir)
        if sockdir != vmdir:
            shutil.rmtree(sockdir, ignore_errors=True)
        shutil.rmtree(vmdir)
        self._remove_staged_seeds(name)
        self._prune_staged_images()

    def _prune_staged_images(self, progress: Progress = NullProgress()) -> None:
        """Remove staged golden images that only an old VM needed (see prune.py); never one in use."""
        vms = self._local_vms()
        broken = [vm for vm in vms if vm.state is None]
        if broken:  # a VM we cannot read might use any image: keep them all
            progress.note(f"not removing unused staged images: {broken[0].broken}")
            return
        disks = [Path(disk.path) for vm in vms if vm.state is not None for disk in vm.state.disks]
        linked = self.staging_dir.exists() and self.staging_dir.stat().st_dev == cache_dir("images").stat().st_dev
        grace = 0.0 if linked else STAGED_IMAGE_GRACE
        for image in unused_staged_images(self.staging_dir, disks, now=time.time(), grace=grace):
            progress.note(f"removing {image.name}: no VM uses this older golden image any more")
            image.unlink(missing_ok=True)

    # --- media ---------------------------------------------------------------------------------
    def set_cdrom(self, vm: VM, slot: int, staged: Staged | None) -> None:
        state = self._state(vm)
        if not 0 <= slot < len(state.cdroms):
            raise InvalidInput(f"{vm.name} has {len(state.cdroms)} CD-ROM drive(s); no slot {slot}")
        if state.cdroms[slot] == (staged.ref if staged else None):
            return
        if self.is_running(vm):
            with self._qmp(vm) as qmp:
                if staged is None:
                    qmp.execute("eject", {"id": f"cdrom{slot}", "force": True})
                else:
                    qmp.execute(
                        "blockdev-change-medium",
                        {"id": f"cdrom{slot}", "filename": staged.ref, "format": "raw", "read-only-mode": "read-only"},
                    )
        state.cdroms[slot] = staged.ref if staged else None
        self._save(vm, state)

    def set_boot(self, vm: VM, order: tuple[str, ...]) -> None:
        state = self._state(vm)
        disk_idx, cd_idx = boot_indexes(tuple(order), len(state.disks), len(state.cdroms))
        state.boot = list(order)
        self._save(vm, state)
        if self.is_running(vm):  # effective at the guest's next reset; a restart uses the new order anyway
            with self._qmp(vm) as qmp:
                for prefix, indexes in (("disk", disk_idx), ("cdrom", cd_idx)):
                    for i, idx in enumerate(indexes):
                        try:
                            qmp.execute("qom-set", {"path": f"/machine/peripheral/{prefix}{i}", "property": "bootindex",
                                                    "value": idx if idx is not None else -1})  # fmt: skip
                        except QMPError:
                            pass

    # --- guest ---------------------------------------------------------------------------------
    def guest_addresses(self, vm: VM, timeout: float) -> list[str]:
        state = self._state(vm)
        if not state.agent:
            raise ImgbuildError(f"{vm.name} has no guest agent channel")
        agent = GuestAgent(Path(state.sockdir) / "qga.sock")
        deadline = time.monotonic() + timeout
        reason = "no answer yet"
        while True:
            if not self.is_running(vm):
                raise ImgbuildError(f"{vm.name} stopped while waiting for its address", detail=self._console_tail(vm))
            self._raise_if_panicked(vm, state)
            try:
                addresses = usable_addresses(agent.network_interfaces())
                if addresses:
                    return addresses
                reason = "the agent reports no address yet"
            except ImgbuildError as exc:
                reason = exc.message
            if time.monotonic() >= deadline:
                raise ImgbuildError(
                    f"no address from {vm.name}'s guest agent within {timeout:.0f}s: {reason}",
                    detail=self._console_tail(vm),
                )
            time.sleep(2)

    def endpoint(self, vm: VM, guest_address: str, port: int) -> Endpoint:
        state = self._state(vm)
        if state.lab is not None:
            if not self.is_running(vm):
                raise ImgbuildError(f"{vm.name} is not running: no forward to {guest_address}:{port}")
            endpoint, changed = lab_nics.forward(state.lab, guest_address, port)
            if changed:
                self._save(vm, state)
            return endpoint
        slirp = state.slirp
        assert slirp is not None
        if guest_address == slirp.guest and port in state.forwards:
            return Endpoint("127.0.0.1", state.forwards[port], f"loopback forward to {slirp.guest}:{port}")
        for fwd in state.extra_forwards:
            if fwd.address == guest_address and fwd.port == port:
                return Endpoint("127.0.0.1", fwd.host_port, f"loopback forward to {guest_address}:{port}")
        if not self.is_running(vm):
            raise ImgbuildError(f"{vm.name} is not running: no forward to {guest_address}:{port}")
        (host_port,) = free_loopback_ports(1)
        with self._qmp(vm) as qmp:
            out = qmp.hmp(f"hostfwd_add net0 tcp:127.0.0.1:{host_port}-{guest_address}:{port}")
        if out.strip():
            raise ImgbuildError(f"cannot forward a loopback port to {guest_address}:{port}: {out.strip()}")
        state.extra_forwards.append(ExtraForward(guest_address, port, host_port))
        self._save(vm, state)
        return Endpoint("127.0.0.1", host_port, f"loopback forward to {guest_address}:{port}")

    def screenshot(self, vm: VM, dest: Path) -> Path:
        dest = Path(dest).resolve()
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not self.is_running(vm):
            raise ImgbuildError(f"{vm.name} is not running: no screen to capture")
        with part_path(dest, mode=0o644) as tmp, self._qmp(vm) as qmp:
            try:
                qmp.execute("screendump", {"filename": str(tmp), "format": "png"}, timeout=30)
                data = tmp.read_bytes()
            except QMPError as exc:
                if "format" not in exc.desc:
                    raise
                qmp.execute("screendump", {"filename": str(tmp)}, timeout=30)  # PPM on QEMU < 7.1
                data = png.ppm_to_png(tmp.read_bytes())
                tmp.write_bytes(data)
            if not png.is_png(data):
                raise ImgbuildError(f"QEMU's screendump of {vm.name} is not a PNG")
            os.chmod(tmp, 0o644)
            os.replace(tmp, dest)
        return dest

    def console_log(self, vm: VM) -> Path | None:
        return Path(self._state(vm).console_log)

    # --- golden images -------------------------------------------------------------------------
    def make_template(self, vm: VM) -> None:
        """Freeze a stopped VM's disks read-only as a base for clones; the VM can no longer be started."""
        if self.is_running(vm):
            raise ImgbuildError(f"{vm.name} is running; shut it down before making it a template")
        state = self._state(vm)
        for disk in state.disks:
            os.chmod(disk.path, 0o444)
        state.template, state.pid, state.forwards, state.extra_forwards = True, None, {}, []
        self._save(vm, state)

    def clone_mac(self, name: str) -> str:
        return derive_mac(name, 0)

    def clone(self, vm: VM, name: str, *, full: bool = True, seed: Staged | None = None,
              network: GuestNetwork | None = None) -> VM:
        """A new VM from *vm*'s disks: a copy (full) or an overlay (linked), new MACs, the seed in slot 0.

        *network* needs nothing here: the source's user-mode subnet already holds any address in it, and
        ``endpoint`` forwards to whatever address the guest reports."""
        src = self._state(vm)
        if self.is_running(vm):
            raise ImgbuildError(f"{vm.name} is running; clone a stopped VM or a template")
        vmdir = self.vm_dir(name)
        if self.find_vm(name) is not None:
            raise ImgbuildError(f"a VM named {name} already exists", detail=f"imgbuild destroy {name}")
        vmdir.mkdir(parents=True)
        os.chmod(vmdir, 0o700)
        disks = []
        for i, disk in enumerate(src.disks):
            path = vmdir / f"disk{i}.qcow2"
            if full:  # a copy of the overlay: still backed by the read-only golden image, not by the template
                shutil.copyfile(disk.path, path)
                os.chmod(path, 0o644)
            else:
                run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", disk.path, path])
            disks.append(replace(disk, path=str(path)))
        ovmf_vars = None
        if src.ovmf_vars:
            ovmf_vars = str(vmdir / "OVMF_VARS.fd")
            shutil.copyfile(src.ovmf_vars, ovmf_vars)
        cdroms: list[str | None] = [None] * max(1, len(src.cdroms))
        if seed is not None:
            cdroms[0] = seed.ref
        console = self.out_root / name / "console.log"
        console.write_bytes(b"")
        state = replace(
            src,
            name=name,
            spec={**src.spec, "name": name},
            disks=disks,
            cdroms=cdroms,
            boot=list(src.boot),
            macs=[derive_mac(name, i) for i in range(len(src.macs))],
            nic_models=list(src.nic_models),
            guest_ports=list(src.guest_ports),
            ovmf_vars=ovmf_vars,
            console_log=str(console),
            sockdir=str(socket_dir(vmdir)),
            forwards={},
            extra_forwards=[],
            lab=replace(src.lab, forwards=[]) if src.lab is not None else None,
            pid=None,
            accel=None,
            tcg_threads=None,
            console_offset=0,
            template=False,
            template_of=None if full else vm.name,
            linked_clones=[],
            labels=[],  # a clone of a release is no release
        )
        save_state(vmdir, state)
        if not full:
            src.linked_clones.append(name)
            self._save(vm, src)
        return self._vm(name, state)

    # --- installer -----------------------------------------------------------------------------
    def installer_log_host(self, network: GuestNetwork) -> str | None:
        """slirp's router address: UDP sent there arrives on 127.0.0.1 of this machine. A lab guest cannot reach
        this machine at all (None: the installer runs without its syslog)."""
        return slirp_for(network).host if self.lab is None else None

    # --- releases ------------------------------------------------------------------------------
    def labels(self, vm: VM) -> frozenset[str]:
        return frozenset() if vm.broken else frozenset(self._state(vm).labels)

    def set_labels(self, vm: VM, labels: Iterable[str]) -> None:
        """Recorded in the VM's state file (one atomic write)."""
        state = self._state(vm)
        state.labels = sorted(set(labels))
        self._save(vm, state)

    def dependents(self, vm: VM) -> list[str]:
        return sorted(c for c in self._state(vm).linked_clones if self.find_vm(c) is not None)

    def store_manifest(self, vm: VM, manifest: str) -> str:
        path = self.vm_dir(vm.name) / RELEASE_MANIFEST
        write_atomic(path, manifest)
        return str(path)

    def read_manifest(self, vm: VM) -> str | None:
        try:
            return (self.vm_dir(vm.name) / RELEASE_MANIFEST).read_text()
        except OSError:
            return None

    # --- internals -----------------------------------------------------------------------------
    def _vm(self, name: str, state: VMState) -> LocalVM:
        return LocalVM(name=name, target=self.name, ident=str(self.vm_dir(name)), state=state)

    def _load(self, vmdir: Path) -> VMState | None:
        return load_state(vmdir, socket_dirs=(socket_dir(vmdir),))

    def _state(self, vm: VM) -> VMState:
        if isinstance(vm, LocalVM) and vm.state is not None:
            return vm.state
        if vm.broken:
            raise ImgbuildError(f"{vm.name} cannot be used: {vm.broken}", detail=f"remove it: imgbuild destroy {vm.name}")
        state = self._load(self.vm_dir(vm.name))
        if state is None:
            raise ImgbuildError(f"no VM named {vm.name} under {self.out_root}")
        if isinstance(vm, LocalVM):
            vm.state = state
        return state

    def _save(self, vm: VM, state: VMState) -> None:
        if isinstance(vm, LocalVM):
            vm.state = state
        save_state(self.vm_dir(vm.name), state)

    def built_from(self, vm: VM) -> str | None:
        """The VM's inputs, or None when it is on the other network (``local`` vs ``lab``): make replaces it."""
        if vm.broken or (self._state(vm).lab is None) != (self.lab is None):
            return None
        return self._state(vm).inputs or None

    def is_template(self, vm: VM) -> bool:
        return not vm.broken and self._state(vm).template

    def _mark_stopped(self, vm: VM) -> None:
        state = self._state(vm)
        forwards = state.lab is not None and lab_nics.stop_forwards(state.lab)
        if state.pid is not None or forwards:
            state.pid = None
            self._save(vm, state)

    def _layout(self, name: str, state: VMState) -> Layout:
        sockdir = Path(state.sockdir)
        accel = state.accel or "tcg"
        return Layout(
            name=name,
            accel=accel,
            tcg_threads=state.tcg_threads or "single",
            cores=state.cores,
            memory_mib=state.memory_mib,
            cpu=_cpu_for(state.cpu, accel),
            display=state.display,
            bios=state.bios,
            disks=tuple(state.disks),
            cdroms=tuple(state.cdroms),
            macs=tuple(state.macs),
            nic_models=tuple(state.nic_models),
            slirp=state.slirp,
            forwards=dict(state.forwards),
            taps=lab_nics.taps(name, state.lab) if state.lab is not None else (),
            netns=state.lab.netns if state.lab is not None else None,
            boot=tuple(state.boot),
            agent=state.agent,
            console_log=state.console_log,
            qmp_socket=str(sockdir / "qmp.sock"),
            agent_socket=str(sockdir / "qga.sock"),
            pidfile=str(self.vm_dir(name) / "qemu.pid"),
            ovmf_vars=state.ovmf_vars,
        )

    def _qmp(self, vm: VM, wait: float = 2.0) -> QMPClient:
        return QMPClient(Path(self._state(vm).sockdir) / "qmp.sock").connect(wait=wait)

    def console_panic(self, vm: VM) -> str | None:
        """The kernel panic line the guest printed on its console since it was last started, if any."""
        return panic_since(self.console_log(vm), self._state(vm).console_offset)

    def _raise_if_panicked(self, vm: VM, state: VMState) -> None:
        panic = self.console_panic(vm)
        if panic is None:
            return
        hint = ""
        ran_multi = state.accel == "tcg" and state.tcg_threads == "multi"
        if ran_multi and tcg_threads("tcg", qemu_version(self.qemu))[0] == "single":  # multi was asked for
            hint = ("\nthis QEMU's multi-threaded TCG (--accel tcg-multi) now and then breaks a guest kernel's "
                    "live code patching; plain --accel tcg runs it single-threaded")
        raise GuestCrashed(f"{vm.name}'s kernel panicked: {panic}", detail=self._console_tail(vm) + hint)

    def _console_tail(self, vm: VM, lines: int = 15) -> str:
        path = self.console_log(vm)
        try:
            text = path.read_bytes()[-8192:].decode("utf-8", "replace") if path else ""
        except OSError:
            return ""
        text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)
        return f"last lines of {path}:\n" + "\n".join(text.splitlines()[-lines:])

    def _check_o_direct(self, vmdir: Path, source: Staged | None) -> None:
        for where in (vmdir, Path(source.ref) if source else None):
            if where is not None and not o_direct_supported(where):
                raise ImgbuildError(
                    f"disk cache=none needs O_DIRECT, which the filesystem holding {where} does not support (tmpfs?)",
                    detail="put the output directory (and the image cache) on a disk filesystem, "
                    "or ask for another disk cache mode",
                )


def _cpu_for(cpu: str, accel: str | None) -> str:
    """'host' means nothing to TCG (QEMU refuses it): emulate the richest CPU instead."""
    return "max" if cpu == "host" and accel != "kvm" else cpu


def _safe_label(label: str, kind: ArtifactKind) -> str:
    suffix = ".iso" if kind == "iso" else ".qcow2"
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", label)[:60] or kind
    return safe[: -len(suffix)] if safe.endswith(suffix) else safe


def _staged_name(digest: str, label: str, kind: ArtifactKind) -> str:
    """``<sha256[:16]>-<label>.iso|.qcow2``: content-addressed, and the label says whose it is."""
    return f"{digest[:16]}-{_safe_label(label, kind)}{'.iso' if kind == 'iso' else '.qcow2'}"


def _virtual_size(image: Path) -> int:
    size = qcow2.virtual_size(image)
    if size is None:
        raise ImgbuildError(f"{image} is not a qcow2 image")
    return size


def _jsonable(data: dict) -> dict:
    return json.loads(json.dumps(data, default=str))


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""
