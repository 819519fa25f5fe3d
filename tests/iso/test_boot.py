"""Boot proof: the installer ISOs boot in QEMU (TCG, 2 GiB, blank virtio disk) on SeaBIOS and OVMF, read
the rendered web-server preseed and, without a single prompt, configure the recipe's static address and
hostname and contact the mirror.

Observed three ways: the installer's remote syslog on a loopback UDP listener (stages, debconf's own
"question will be asked" with DEBCONF_DEBUG=5), the serial console (newt's dialog help line = a prompt),
and a pcap of the guest's packets (source address, DNS question for the mirror's host).

The mirror here serves no .udeb files, so an install cannot go further than retrieving installer
components: each test stops the VM as soon as everything above is proven. With
IMGBUILD_FULL_INSTALL=1 (a machine with a complete mirror), one more test runs the whole install to
power-off.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from builder.iso.installer import build_recipe_isos
from builder.iso.installer_log import InstallerLog, serial_shows_dialog
from builder.iso.netboot import NetbootFiles
from builder.iso.remaster import remaster_iso
from builder.targets.console import kernel_panic
from tests.iso.conftest import RecipeNetwork, need_tool
from tests.iso.pcap import dns_queries, read_pcap
from tests.iso.vm import Firmware, InstallerVM, slirp_plan

pytestmark = pytest.mark.boot

BOOT_TIMEOUT = float(os.environ.get("IMGBUILD_BOOT_TIMEOUT", "900"))
FULL_INSTALL_TIMEOUT = float(os.environ.get("IMGBUILD_FULL_INSTALL_TIMEOUT", "5400"))

IsoFactory = Callable[[Sequence[str], Path], Path]  # (kernel args, work dir) -> ISO


@dataclass
class Proof:
    static_address: bool = False  # netcfg configured the recipe's address (ARPING gateway from it)
    hostname: bool = False  # the preseeded hostname was taken
    mirror_fetched: list[str] = field(default_factory=list)  # URLs fetched from the mirror
    packets_from_address: int = 0
    dns_for_mirror: bool = False
    stages: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return (
            self.static_address
            and self.hostname
            and bool(self.mirror_fetched)
            and self.packets_from_address > 0
            and self.dns_for_mirror
        )


def _gather(log: InstallerLog, vm: InstallerVM, net: RecipeNetwork) -> Proof:
    ip = str(ipaddress.ip_interface(net.address).ip)
    lines = log.lines()
    proof = Proof(stages=log.stages())
    proof.static_address = any(
        line.startswith("netcfg") and f"ARPING {net.gateway} from {ip}" in line for line in lines
    ) and any(line.startswith("netcfg") and f"ip route add default via {net.gateway}" in line for line in lines)
    proof.hostname = any(
        f"SET netcfg/get_hostname {net.hostname}" in line or f"{net.hostname} is a valid FQDN" in line for line in lines
    )
    proof.mirror_fetched = [e.url for e in log.events("fetched") if urlsplit(e.url).hostname == net.mirror_host]
    if vm.pcap.exists():
        packets = read_pcap(vm.pcap)
        proof.packets_from_address = sum(1 for p in packets if p.src == ip)
        proof.dns_for_mirror = (ip, net.mirror_host) in dns_queries(packets)
    return proof


def _diagnosis(log: InstallerLog, vm: InstallerVM) -> str:
    return (
        "\n--- last installer syslog lines ---\n" + "\n".join(log.lines()[-25:])
        + f"\n--- serial console tail ---\n{vm.serial_tail(2500)}\n--- logs kept in {vm.dir} ---"
    )


class KernelPanicked(Exception):
    """The guest kernel panicked before the proof was complete."""


def prove_unattended_until_mirror(
    make_iso: IsoFactory, firmware: Firmware, work: Path, net: RecipeNetwork
) -> Proof:
    """Boot until everything is proven. A guest kernel panic gets one more boot, as `imgbuild make` gives it
    (builder/pipeline/make.py boot): a panic under TCG is the emulator's fault, not the ISO's (see
    builder/targets/local/accel.py on multi-threaded TCG and "Oops: int3")."""
    need_tool("qemu-system-x86_64", "qemu-system-x86")
    need_tool("qemu-img", "qemu-utils")
    for attempt in (1, 2):
        try:
            return _prove_once(make_iso, firmware, work / f"boot{attempt}", net)
        except KernelPanicked as exc:
            if attempt == 2:
                raise AssertionError(f"the guest kernel panicked on both boots: {exc}") from None
            print(f"{firmware}: the guest kernel panicked ({str(exc).splitlines()[0]}); booting once more")
    raise AssertionError("unreachable")


def _prove_once(make_iso: IsoFactory, firmware: Firmware, work: Path, net: RecipeNetwork) -> Proof:
    work.mkdir(parents=True, exist_ok=True)
    plan = slirp_plan(net.address, net.gateway, net.nameserver)
    with InstallerLog(raw_log=work / "installer-syslog.txt") as log:
        args = [f"log_host={plan.log_host}", f"log_port={log.port}", "DEBCONF_DEBUG=5"]
        iso = make_iso(args, work)
        with InstallerVM(iso, work / "vm", firmware=firmware, plan=plan) as vm:
            deadline = time.monotonic() + BOOT_TIMEOUT
            while True:
                # Proof first: on these machines the mirror itself stops the installer seconds after it was
                # contacted (bad Release signature, no .udeb files), and the question it then asks is the
                # expected end of the road, not a failure. Any question before the proof is complete fails.
                proof = _gather(log, vm, net)
                if proof.complete:
                    print(f"{firmware}: proven after {vm.elapsed():.0f}s; stages {proof.stages}")
                    return proof
                prompts = log.prompts()
                if prompts:  # the packet capture may still be catching up: judge once it has, or in 5 s
                    settle = time.monotonic() + 5
                    while not proof.complete and time.monotonic() < settle:
                        time.sleep(0.2)
                        proof = _gather(log, vm, net)
                    if proof.complete:
                        return proof
                panic = kernel_panic(vm.serial_bytes())
                if panic:
                    raise KernelPanicked(panic + _diagnosis(log, vm))
                assert not prompts, f"the installer prompted: {prompts[0].text}; {proof}" + _diagnosis(log, vm)
                assert not serial_shows_dialog(vm.serial_bytes()), "a dialog is waiting on the console" + _diagnosis(log, vm)
                assert vm.running(), f"QEMU exited ({vm.proc.returncode if vm.proc else '?'})" + _diagnosis(log, vm)
                assert time.monotonic() < deadline, f"not proven within {BOOT_TIMEOUT:.0f}s: {proof}" + _diagnosis(log, vm)
                log.wait_for(lambda l: bool(l.prompts()), timeout=2)


@pytest.fixture
def recipe_dir(rendered: Path, tmp_path: Path) -> Path:
    work = tmp_path / "web-server"
    work.mkdir()
    for name in ("preseed.cfg", "user-data", "meta-data", "network-config"):
        shutil.copy(rendered / name, work / name)
    return work


def _netboot_iso(recipe_dir: Path, netboot: NetbootFiles) -> IsoFactory:
    def make(args: Sequence[str], work: Path) -> Path:
        return build_recipe_isos(recipe_dir, release="trixie", kernel_args=args, netboot=netboot).installer

    return make


def _check(proof: Proof, net: RecipeNetwork) -> None:
    assert proof.static_address and proof.hostname
    assert any(url.endswith("/Release") for url in proof.mirror_fetched), proof.mirror_fetched
    assert proof.dns_for_mirror and proof.packets_from_address > 0
    assert proof.stages[:2] == ["network", "mirror"], proof.stages


def test_installer_iso_bios(recipe_dir: Path, netboot: NetbootFiles, recipe_network: RecipeNetwork, tmp_path: Path) -> None:
    proof = prove_unattended_until_mirror(_netboot_iso(recipe_dir, netboot), "bios", tmp_path, recipe_network)
    _check(proof, recipe_network)


def test_installer_iso_uefi(recipe_dir: Path, netboot: NetbootFiles, recipe_network: RecipeNetwork, tmp_path: Path) -> None:
    proof = prove_unattended_until_mirror(_netboot_iso(recipe_dir, netboot), "uefi", tmp_path, recipe_network)
    _check(proof, recipe_network)


def test_installer_iso_secure_boot(netboot: NetbootFiles, recipe_network: RecipeNetwork, tmp_path: Path) -> None:
    """With Secure Boot on (OVMF with Microsoft's keys) Debian's signed shim, GRUB and kernel load from
    the ISO: the kernel reports Secure Boot enabled. Stops there: the rest is the UEFI test's."""
    from builder.iso.installer import build_installer_iso

    iso = build_installer_iso(b"d-i debian-installer/locale string en_US\n", tmp_path / "sb.iso", release="trixie", netboot=netboot).path  # noqa: E501
    plan = slirp_plan(recipe_network.address, recipe_network.gateway, recipe_network.nameserver)
    with InstallerVM(iso, tmp_path / "vm", firmware="uefi-secureboot", plan=plan) as vm:
        deadline = time.monotonic() + 300
        while b"secureboot: Secure boot enabled" not in vm.serial_bytes():
            assert vm.running(), vm.serial_tail()
            assert b"Access Denied" not in vm.serial_bytes() and b"Verification failed" not in vm.serial_bytes(), vm.serial_tail()
            assert time.monotonic() < deadline, "the kernel did not start under Secure Boot\n" + vm.serial_tail()
            time.sleep(2)
        assert b"Linux version" in vm.serial_bytes()


def test_remastered_iso_bios(
    debian_like_big: Path, rendered: Path, recipe_network: RecipeNetwork, tmp_path: Path
) -> None:
    def make(args: Sequence[str], work: Path) -> Path:
        preseed = (rendered / "preseed.cfg").read_bytes()
        return remaster_iso(debian_like_big, preseed, work / "installer.iso", kernel_args=args).path

    proof = prove_unattended_until_mirror(make, "bios", tmp_path, recipe_network)
    _check(proof, recipe_network)


@pytest.mark.optin("IMGBUILD_FULL_INSTALL", "needs a Debian mirror that serves .udeb files")
def test_full_install_to_power_off(
    recipe_dir: Path, netboot: NetbootFiles, recipe_network: RecipeNetwork, tmp_path: Path
) -> None:
    """Opt-in (IMGBUILD_FULL_INSTALL=1, needs a mirror that serves .udeb files): the whole install,
    with no prompt, ends with the guest powering itself off and a partitioned disk."""
    plan = slirp_plan(recipe_network.address, recipe_network.gateway, recipe_network.nameserver)
    with InstallerLog(raw_log=tmp_path / "installer-syslog.txt") as log:
        args = [f"log_host={plan.log_host}", f"log_port={log.port}", "DEBCONF_DEBUG=5"]
        iso = _netboot_iso(recipe_dir, netboot)(args, tmp_path)
        with InstallerVM(iso, tmp_path / "vm", firmware="bios", plan=plan) as vm:
            deadline = time.monotonic() + FULL_INSTALL_TIMEOUT
            while vm.running():
                assert not log.prompts(), f"the installer prompted: {log.prompts()[0].text}" + _diagnosis(log, vm)
                assert not serial_shows_dialog(vm.serial_bytes()[-20000:]), "dialog on the console" + _diagnosis(log, vm)
                assert time.monotonic() < deadline, "install did not finish" + _diagnosis(log, vm)
                log.wait_for(lambda l: bool(l.prompts()), timeout=5)
            assert vm.proc is not None and vm.proc.returncode == 0, _diagnosis(log, vm)
            assert "finish" in log.stages(), log.stages()
            with open(vm.disk, "rb") as fh:
                assert fh.read(1 << 20).strip(b"\0"), "the disk is still blank"
