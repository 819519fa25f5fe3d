"""DHCP for a lab network: dnsmasq with DHCP only (no DNS), inside the namespace that serves it."""

from __future__ import annotations

from pathlib import Path

from builder.errors import ImgbuildError
from builder.lab import netns as ns
from builder.lab.plan import Dhcp
from builder.lab.state import DhcpServer
from builder.proc import require_tool, run


def dnsmasq_argv(dhcp: Dhcp, files: Path) -> list[str]:
    """dnsmasq's command line for *dhcp*, keeping its pid, leases and log under *files* (pure)."""
    stem = files / f"dnsmasq-{dhcp.bridge}"
    argv = [
        "dnsmasq", "--conf-file=/dev/null", "--no-resolv", "--no-hosts", "--port=0",  # DHCP only
        f"--interface={dhcp.interface}", "--bind-interfaces", "--except-interface=lo",
        f"--dhcp-range={dhcp.range.start},{dhcp.range.end},{dhcp.netmask},1h",
        "--dhcp-authoritative", f"--dhcp-leasefile={stem}.leases", f"--pid-file={stem}.pid",
        f"--log-facility={stem}.log", "--log-dhcp",
    ]  # fmt: skip
    if dhcp.router is not None:
        argv.append(f"--dhcp-option=option:router,{dhcp.router}")
    return argv


def start_dhcp(dhcp: Dhcp, files: Path) -> DhcpServer:
    from builder.targets.local.state import process_alive, read_pidfile  # (not at import: targets.local imports the lab)

    require_tool("dnsmasq", "dnsmasq-base")
    argv = dnsmasq_argv(dhcp, files)
    pidfile = files / f"dnsmasq-{dhcp.bridge}.pid"
    run(ns.in_netns(dhcp.netns, argv), timeout=30)  # dnsmasq forks into the background once it listens
    pid = read_pidfile(pidfile)
    if not process_alive(pid, "dnsmasq"):
        raise ImgbuildError(f"dnsmasq for {dhcp.bridge} did not stay up", detail=_tail(files / f"dnsmasq-{dhcp.bridge}.log"))
    return DhcpServer(dhcp.bridge, dhcp.netns, str(pidfile))


def dhcp_running(server: DhcpServer) -> int | None:
    from builder.targets.local.state import process_alive, read_pidfile

    pid = read_pidfile(Path(server.pidfile))
    return pid if process_alive(pid, "dnsmasq") else None


def _tail(path: Path) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-10:])
    except OSError:
        return ""
