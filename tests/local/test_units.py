"""The local target's pure parts and protocol clients, without booting a guest."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import threading
from pathlib import Path

import pytest

from builder.errors import ImgbuildError, InvalidInput
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, VMSpec
from builder.targets.local import LocalTarget, derive_mac
from builder.targets.local import target as target_mod
from builder.targets.local.accel import choose_accel, parse_qemu_version, qemu_version, tcg_threads
from builder.targets.local.agent import GuestAgent, usable_addresses
from builder.targets.local.network import slirp_for
from builder.targets.local.png import is_png, ppm_to_png
from builder.targets.local.qemu_cmd import DiskState, Layout, boot_indexes, qemu_argv
from builder.targets.local.qmp import QMPClient, QMPError
from builder.targets.local.state import o_direct_supported
from tests.local.guest import png_pixels


def test_static_network_gets_a_matching_slirp_subnet() -> None:
    net = slirp_for(GuestNetwork("static", "192.168.1.250/24", "192.168.1.1", ("192.168.1.3",)))
    assert (net.net, net.host, net.dns, net.guest) == ("192.168.1.0/24", "192.168.1.1", "192.168.1.3", "192.168.1.250")
    opts = net.netdev_options({22: 40022, 80: 40080})
    assert "net=192.168.1.0/24,host=192.168.1.1,dns=192.168.1.3" in opts
    assert "hostfwd=tcp:127.0.0.1:40022-192.168.1.250:22" in opts
    assert "hostfwd=tcp:127.0.0.1:40080-192.168.1.250:80" in opts


def test_dns_on_the_gateway_moves_the_host_side() -> None:
    """A home-router recipe (DNS = gateway): slirp serves DNS on the gateway's address, the host on another."""
    net = slirp_for(GuestNetwork("static", "192.168.1.250/24", "192.168.1.1", ("192.168.1.1",)))
    assert (net.net, net.dns, net.host, net.guest) == ("192.168.1.0/24", "192.168.1.1", "192.168.1.2", "192.168.1.250")


def test_dns_outside_the_subnet_gets_slirps_own_forwarder() -> None:
    net = slirp_for(GuestNetwork("static", "10.9.8.7/16", "10.9.0.1", ("1.1.1.1",)))
    assert net.net == "10.9.0.0/16" and net.host == "10.9.0.1" and net.dns == "10.9.0.3"


@pytest.mark.parametrize("mode", ["dhcp", "nat"])
def test_dhcp_and_nat_use_the_default_subnet(mode: str) -> None:
    net = slirp_for(GuestNetwork(mode))
    assert (net.net, net.host, net.dns, net.guest) == ("10.0.2.0/24", "10.0.2.2", "10.0.2.3", "10.0.2.15")


@pytest.mark.parametrize(
    ("network", "message"),
    [
        (GuestNetwork("static"), "needs an address"),
        (GuestNetwork("static", "192.168.1.250/24", "10.0.0.1"), "outside"),
        (GuestNetwork("static", "192.168.1.250/30"), "too small"),
        (GuestNetwork("static", "fd00::5/64"), "IPv4 only"),
    ],
)
def test_bad_static_networks_are_refused(network: GuestNetwork, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        slirp_for(network)


def _layout(**kw: object) -> Layout:
    base = dict(
        name="vm1", accel="tcg", cores=2, memory_mib=2048, cpu="kvm64", display="qxl", bios="seabios",
        disks=(DiskState("/x/disk0.qcow2"),), cdroms=("/x/seed.iso", None), macs=("52:54:00:00:00:01",),
        nic_models=("virtio",), slirp=slirp_for(GuestNetwork("dhcp")), forwards={22: 45000}, boot=("disk", "cdrom"),
        agent=True, console_log="/x/console.log", qmp_socket="/x/qmp.sock", agent_socket="/x/qga.sock",
        pidfile="/x/qemu.pid",
    )  # fmt: skip
    base.update(kw)
    return Layout(**base)  # type: ignore[arg-type]


def test_qemu_command_line() -> None:
    argv = qemu_argv(_layout())
    line = " ".join(argv)
    assert argv[argv.index("-accel") + 1] == "tcg,thread=single"
    assert "tcg,thread=multi" in qemu_argv(_layout(tcg_threads="multi"))
    with pytest.raises(InvalidInput, match="thread mode"):
        qemu_argv(_layout(tcg_threads="single,foo=bar"))
    assert argv[argv.index("-cpu") + 1] == "kvm64" and argv[argv.index("-m") + 1] == "2048"
    assert "cores=2" in argv[argv.index("-smp") + 1]
    assert "file=/x/disk0.qcow2,format=qcow2,cache=none" in line
    assert "virtio-blk-pci,drive=drive-disk0,id=disk0,bootindex=1" in line
    assert "ide-cd,bus=ide.0,drive=drive-cd0,id=cdrom0,bootindex=2" in line
    assert "if=none,id=drive-cd1,media=cdrom,readonly=on " in line + " "  # empty drive
    assert "virtio-net-pci,netdev=net0,mac=52:54:00:00:00:01,id=nic0,romfile=" in argv  # no PXE ROM to load
    assert "hostfwd=tcp:127.0.0.1:45000-10.0.2.15:22" in line
    assert "file,id=serial0,path=/x/console.log,append=on" in line
    assert "name=org.qemu.guest_agent.0" in line
    assert argv[argv.index("-display") + 1] == "none" and argv[argv.index("-vga") + 1] == "qxl"
    assert "-daemonize" in argv and "pflash" not in line
    ovmf = " ".join(qemu_argv(_layout(bios="ovmf", ovmf_vars="/x/OVMF_VARS.fd", accel="kvm")))
    assert "if=pflash,format=raw,unit=1,file=/x/OVMF_VARS.fd" in ovmf and "-accel kvm" in ovmf


def test_boot_order_to_bootindex() -> None:
    assert boot_indexes(("disk", "cdrom"), 1, 2) == ([1], [2, 3])
    assert boot_indexes(("cdrom", "disk"), 1, 1) == ([2], [1])
    assert boot_indexes(("disk",), 1, 1) == ([1], [None])
    with pytest.raises(InvalidInput):
        boot_indexes(("net",), 1, 1)


def test_addresses_drop_loopback_and_link_local() -> None:
    interfaces = [
        {"name": "lo", "ip-addresses": [{"ip-address": "127.0.0.1"}, {"ip-address": "::1"}]},
        {"name": "enp0s2", "ip-addresses": [
            {"ip-address": "fe80::5054:ff:fe00:1%enp0s2"}, {"ip-address": "fec0::5054:ff:fe00:1"},
            {"ip-address": "192.168.1.250"},
        ]},
    ]  # fmt: skip
    assert usable_addresses(interfaces) == ["192.168.1.250", "fec0::5054:ff:fe00:1"]


def test_derived_macs_are_stable_local_and_distinct() -> None:
    assert derive_mac("web", 0) == derive_mac("web", 0)
    assert derive_mac("web", 0) != derive_mac("web", 1) != derive_mac("web2", 0)
    assert derive_mac("web").startswith("52:54:00:")


def test_ppm_screendump_converts_to_png() -> None:
    ppm = b"P6\n# qemu\n4 2\n255\n" + bytes([255, 0, 0] * 4 + [0, 0, 255] * 4)
    data = ppm_to_png(ppm)
    assert is_png(data)
    assert png_pixels(data) == (4, 2, {b"\xff\x00\x00"})  # row 0 sampled


def test_agent_skips_stale_answers(tmp_path: Path) -> None:
    """A reply left over from an abandoned exchange comes before our guest-sync: it must be skipped."""
    path = tmp_path / "qga.sock"
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(1)

    def guest() -> None:
        conn, _ = server.accept()
        with conn, conn.makefile("rwb") as fh:
            sync = json.loads(fh.readline())
            fh.write(b'{"return": 12345}\n{"return": {"stale": 1}}\n')
            fh.write(json.dumps({"return": sync["arguments"]["id"]}).encode() + b"\n")
            fh.flush()
            assert json.loads(fh.readline())["execute"] == "guest-network-get-interfaces"
            fh.write(b'{"return": [{"name": "eth0", "ip-addresses": [{"ip-address": "10.0.2.15"}]}]}\n')
            fh.flush()

    thread = threading.Thread(target=guest, daemon=True)
    thread.start()
    try:
        assert usable_addresses(GuestAgent(path).network_interfaces()) == ["10.0.2.15"]
    finally:
        thread.join(5)
        server.close()


def test_agent_unavailable_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ImgbuildError, match="guest agent socket"):
        GuestAgent(tmp_path / "missing.sock").network_interfaces()


def test_qmp_client_against_qemu(tmp_path: Path) -> None:
    sock = tmp_path / "qmp.sock"
    proc = subprocess.Popen(
        ["qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
         "-chardev", f"socket,id=qmp,path={sock},server=on,wait=off", "-mon", "chardev=qmp,mode=control"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        with QMPClient(sock).connect(wait=10) as qmp:
            assert "status" in qmp.execute("query-status")
            with pytest.raises(QMPError, match="no-such-command|not found"):
                qmp.execute("no-such-command")
            assert "qemu" in qmp.hmp("info version").lower() or qmp.hmp("info version").strip()
            qmp.execute("quit")
        proc.wait(10)
    finally:
        proc.kill()
        proc.wait()


def test_o_direct_probe_and_the_error_without_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert o_direct_supported(tmp_path)  # the test tree sits on a disk filesystem here
    monkeypatch.setattr(target_mod, "o_direct_supported", lambda path: False)
    spec = VMSpec(name="nodirect", disks=(DiskSpec(1024**3),), nics=(NicSpec("52:54:00:00:00:09"),))
    with pytest.raises(ImgbuildError, match="cache=none needs O_DIRECT"):
        LocalTarget(tmp_path / "out").create_vm(spec)


def test_qemu_version_is_read_from_its_banner() -> None:
    assert parse_qemu_version("QEMU emulator version 7.2.22 (Debian 1:7.2+dfsg-7+deb12u18+b3)\n") == (7, 2, 22)
    assert parse_qemu_version("QEMU emulator version 10.0.2 (Debian 1:10.0.2+ds-2)") == (10, 0, 2)
    assert parse_qemu_version("QEMU emulator version 8.1") == (8, 1, 0)
    assert parse_qemu_version("qemu: command not found") is None


@pytest.mark.parametrize(
    ("requested", "version", "threads"),
    [
        ("auto", (7, 2, 22), "single"),  # this machine: the racy multi-threaded TCG is not used
        ("tcg", (8, 0, 4), "single"),
        ("tcg", None, "single"),  # unknown: the safe choice
        ("auto", (8, 1, 0), "multi"),
        ("tcg", (10, 0, 2), "multi"),
        ("tcg-multi", (7, 2, 22), "multi"),  # asked for
    ],
)
def test_tcg_thread_mode_follows_the_qemu_version(requested: str, version: tuple[int, ...] | None, threads: str) -> None:
    mode, reason = tcg_threads(requested, version)
    assert mode == threads and reason


def test_requested_tcg_carries_the_thread_mode_of_this_qemu() -> None:
    verdict = choose_accel("tcg")
    assert verdict.accel == "tcg" and verdict.tcg_threads == tcg_threads("tcg", qemu_version())[0]
    assert choose_accel("tcg-multi").tcg_threads == "multi"
    assert choose_accel("kvm").describe() == "kvm"


def test_target_refuses_bad_names_and_accel(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="accel"):
        LocalTarget(tmp_path, accel="xen")
    with pytest.raises(InvalidInput, match="VM name"):
        LocalTarget(tmp_path).vm_dir("../escape")


def test_stage_is_content_addressed_and_cheap(tmp_path: Path) -> None:
    target = LocalTarget(tmp_path / "out")
    iso = tmp_path / "seed.iso"
    iso.write_bytes(b"x" * 4096)
    first = target.stage(iso, "iso", label="seed")
    again = target.stage(iso, "iso", label="seed")
    assert first.uploaded and not again.uploaded and first.ref == again.ref
    assert os.stat(first.ref).st_ino == iso.stat().st_ino  # a hard link, not a copy
    target.unstage(first)
    assert not Path(first.ref).exists() and iso.exists()


def test_probe_kernel_comes_from_kept_kernels_then_netboot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from builder.targets.local.accel import find_probe_kernel

    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    netboot = tmp_path / "netboot" / "abc" / "files" / "linux"
    netboot.parent.mkdir(parents=True)
    netboot.write_bytes(b"bzImage")
    assert find_probe_kernel() == netboot
    kept = tmp_path / "kernels" / "vmlinuz-6.12.0-1-amd64"
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_bytes(b"bzImage")
    assert find_probe_kernel() == kept
