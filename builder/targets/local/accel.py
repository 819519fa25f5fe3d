"""Choose QEMU's accelerator: KVM where it really runs a guest, TCG otherwise.

``/dev/kvm`` existing is not enough (FACTS: on these machines SeaBIOS runs under KVM, but a Linux
kernel then stops with "KVM internal error" while decompressing itself). The probe therefore runs
two short guests with KVM:
1. SeaBIOS alone, watching its debug console (port 0x402) for its banner: KVM starts at all;
2. a Linux kernel with ``earlyprintk`` on the serial port, watching for ``Linux version``: KVM runs
   a kernel. The kernel is the newest one golden image builds left in ``cache_dir("kernels")`` (or
   the host's own under /boot); without one, stage 1 decides.
The verdict is cached per boot of the host (``/proc/sys/kernel/random/boot_id``).

Under TCG, QEMU translates guest code on one host thread per vCPU ("multi") unless told to use one
thread for all ("single"). QEMU before 8.1 has a race there: a page the guest kernel patches while
another vCPU translates it keeps a stale translation, and the kernel dies with "Oops: int3" or "Fatal
exception in interrupt" (a few boots in a hundred on a busy 2-core host here; fixed upstream by "accel/tcg:
Always lock pages before translation", QEMU 8.1). So "tcg" means single-threaded TCG on an older QEMU and
multi-threaded from 8.1; "tcg-multi" asks for multi-threaded anyway (faster, with that risk).
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from builder.cachedir import cache_dir, cache_root
from builder.errors import InvalidInput
from builder.fsutil import write_atomic
from builder.proc import require_tool

log = logging.getLogger(__name__)

Accel = Literal["kvm", "tcg"]
TcgThreads = Literal["single", "multi"]
ACCEL_CHOICES = ("auto", "kvm", "tcg", "tcg-multi")
MTTCG_FIXED_IN = (8, 1)  # the first QEMU whose multi-threaded TCG survives guest kernel code patching


@dataclass(frozen=True)
class AccelVerdict:
    accel: Accel
    reason: str
    cached: bool = False
    tcg_threads: TcgThreads = "multi"  # meaningful under TCG only
    threads_reason: str = ""

    def describe(self) -> str:
        if self.accel == "kvm":
            return "kvm"
        return f"tcg, {self.tcg_threads}-threaded"


def tcg_threads(requested: str, version: tuple[int, ...] | None) -> tuple[TcgThreads, str]:
    """TCG's thread mode for *requested* on a QEMU of *version* (None: unknown, treated as old). Pure."""
    if requested == "tcg-multi":
        return "multi", "requested"
    shown = ".".join(map(str, version)) if version else "of unknown version"
    if version is not None and version[:2] >= MTTCG_FIXED_IN:
        return "multi", f"QEMU {shown} translates on one thread per vCPU safely"
    fixed = ".".join(map(str, MTTCG_FIXED_IN))
    return "single", (f"QEMU {shown} predates {fixed}, whose multi-threaded TCG now and then breaks a guest "
                      "kernel's live code patching")  # fmt: skip


@functools.lru_cache(maxsize=4)
def qemu_version(qemu: str = "qemu-system-x86_64") -> tuple[int, ...] | None:
    """(major, minor, micro) from ``qemu --version``; None when it cannot be read."""
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, timeout=30,
                             check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_qemu_version(out)


def parse_qemu_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"QEMU emulator version (\d+)\.(\d+)(?:\.(\d+))?", text)
    return tuple(int(g or 0) for g in m.groups()) if m else None


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def choose_accel(
    requested: str = "auto", *, use_cache: bool = True, kernel: Path | None = None, qemu: str = "qemu-system-x86_64"
) -> AccelVerdict:
    """The accelerator to use for *requested* (one of ACCEL_CHOICES), with TCG's thread mode."""
    if requested not in ACCEL_CHOICES:
        raise InvalidInput(f"accel {requested!r} is not one of {', '.join(ACCEL_CHOICES)}")
    verdict = _choose(requested, use_cache=use_cache, kernel=kernel)
    if verdict.accel != "tcg":
        return verdict
    threads, why = tcg_threads(requested, qemu_version(qemu))
    return AccelVerdict(verdict.accel, verdict.reason, verdict.cached, threads, why)


def _choose(requested: str, *, use_cache: bool, kernel: Path | None) -> AccelVerdict:
    if requested in ("tcg", "tcg-multi"):
        return AccelVerdict("tcg", "requested")
    if requested == "kvm":
        return AccelVerdict("kvm", "requested")
    cache_file = cache_dir("local") / "accel.json"
    current = boot_id()
    if use_cache:
        try:
            data = json.loads(cache_file.read_text())
            if data.get("boot_id") == current and data.get("accel") in ("kvm", "tcg"):
                return AccelVerdict(data["accel"], data.get("reason", ""), cached=True)
        except (OSError, ValueError):
            pass
    verdict = probe_kvm(kernel=kernel)
    write_atomic(cache_file, json.dumps({"boot_id": current, "accel": verdict.accel, "reason": verdict.reason}) + "\n")
    return verdict


def find_probe_kernel() -> Path | None:
    """A Linux kernel to probe with: one a golden image build kept, the installer's netboot kernel, or
    the host's own."""
    kept = list(cache_dir("kernels").glob("vmlinuz-*"))
    netboot = [p for p in cache_root().glob("netboot/**/linux") if p.is_file()]
    candidates = sorted(kept, key=lambda p: p.stat().st_mtime, reverse=True) + netboot
    candidates.append(Path("/boot") / f"vmlinuz-{os.uname().release}")
    return next((c for c in candidates if c.is_file() and os.access(c, os.R_OK)), None)


def probe_kvm(*, kernel: Path | None = None, timeout: float = 4.0, kernel_timeout: float = 6.0) -> AccelVerdict:
    """Run the two-stage probe (see module doc). Takes a few seconds; never leaves a QEMU behind."""
    if not os.path.exists("/dev/kvm"):
        return AccelVerdict("tcg", "no /dev/kvm")
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return AccelVerdict("tcg", "/dev/kvm is not accessible to this user")
    qemu = require_tool("qemu-system-x86_64", "qemu-system-x86")
    base = [qemu, "-accel", "kvm", "-machine", "pc", "-cpu", "kvm64", "-m", "256", "-nodefaults", "-no-user-config",
            "-display", "none", "-no-reboot"]  # fmt: skip
    with tempfile.TemporaryDirectory(prefix="imgbuild-kvm-probe-") as tmp:
        debugcon = Path(tmp) / "seabios.log"
        ok, err = _watch(
            [*base, "-chardev", f"file,id=dbg,path={debugcon}", "-device", "isa-debugcon,iobase=0x402,chardev=dbg"],
            debugcon, b"SeaBIOS", timeout,
        )  # fmt: skip
        if not ok:
            return AccelVerdict("tcg", f"firmware printed nothing under KVM within {timeout:.0f}s{_colon(err)}")
        kernel = kernel or find_probe_kernel()
        if kernel is None:
            return AccelVerdict("kvm", "SeaBIOS runs under KVM (no kernel to probe further)")
        serial = Path(tmp) / "serial.log"
        ok, err = _watch(
            [*base, "-serial", f"file:{serial}", "-kernel", str(kernel),
             "-append", "console=ttyS0,115200 earlyprintk=serial,ttyS0,115200 panic=-1"],
            serial, b"Linux version", kernel_timeout,
        )  # fmt: skip
        if not ok:
            why = err or f"no kernel output within {kernel_timeout:.0f}s"
            return AccelVerdict("tcg", f"SeaBIOS runs under KVM but a Linux kernel does not ({why})")
    return AccelVerdict("kvm", "a Linux kernel boots under KVM")


def _colon(err: str) -> str:
    return f" ({err})" if err else ""


def _watch(argv: list[str], logfile: Path, marker: bytes, timeout: float) -> tuple[bool, str]:
    """Start *argv*, wait until *logfile* contains *marker* (True) or *timeout* passes; always kill it."""
    errfile = logfile.with_suffix(".stderr")
    with open(errfile, "wb") as err:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
                                start_new_session=True)  # fmt: skip
    found = False
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                if marker in logfile.read_bytes():
                    found = True
                    break
            except FileNotFoundError:
                pass
            if proc.poll() is not None:
                break
            try:
                if b"KVM internal error" in errfile.read_bytes():
                    break  # QEMU pauses the guest and waits forever: no need to sit out the timeout
            except FileNotFoundError:
                pass
            time.sleep(0.1)
    finally:
        proc.kill()
        proc.wait()
    message = ""
    try:
        text = errfile.read_text(errors="replace")
        lines = [ln for ln in text.splitlines() if "error" in ln.lower()]
        message = (lines or [""])[0].strip()[:160]
    except OSError:
        pass
    log.debug("kvm probe %s: found=%s %s", marker, found, message)
    return found, message
