"""imgbuild lab up|status|down: a host description's network in namespaces on this machine."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

from builder.cli.context import Context
from builder.hostnet import find_host, load_host
from builder.lab.plan import DEFAULT_LAB, check_lab_name

DEFAULT_HOST = "chapter"


def default_lab() -> str:
    return os.environ.get("IMGBUILD_LAB") or DEFAULT_LAB


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lab", help="build a Proxmox VE node's network in namespaces here (target 'lab')",
                       description="The lab is a host description's network built on this machine: the node in one "
                                   "network namespace, configured by ifupdown2 from the same /etc/network/interfaces "
                                   "that host-net render prints, its NICs veth pairs to namespaces playing the machines "
                                   "at the other end (a LAN client, the provider's router), dnsmasq where the "
                                   "description asks for DHCP. `imgbuild make RECIPE --target lab` puts guests on its "
                                   "bridges. Needs root. Nothing is created outside namespaces named imgbuild-LAB_*.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    lab_help = "the lab's name (default: $IMGBUILD_LAB or 'lab'); several labs can exist side by side"
    up = actions.add_parser("up", help="build the lab", description="Build the lab from HOST and bring it up.")
    up.add_argument("host", metavar="HOST", nargs="?", default=DEFAULT_HOST,
                    help="a host description file or a name in RECIPES/hosts/ (default: chapter, the chapter's node)")
    up.add_argument("--lab", default=None, metavar="NAME", help=lab_help)
    up.add_argument("--json", action="store_true", help="print the lab's status as JSON when it is up")
    up.set_defaults(func=run_up)
    status = actions.add_parser("status", help="show the lab's namespaces, bridges, guests and DHCP servers",
                                description="Show the lab: its namespaces, the node's bridges with their addresses, "
                                            "ports and guests, and the DHCP servers.")
    status.add_argument("--lab", default=None, metavar="NAME", help=lab_help)
    status.add_argument("--json", action="store_true", help="print JSON")
    status.set_defaults(func=run_status)
    down = actions.add_parser("down", help="remove the lab (also what a crashed run left)",
                              description="Stop every process in the lab's namespaces (DHCP servers, guests, "
                                          "loopback forwards) and remove the namespaces with everything in them. "
                                          "Works after a crash: the lab's record and its namespace names are enough.")
    down.add_argument("--lab", default=None, metavar="NAME", help=lab_help)
    down.add_argument("--json", action="store_true", help="print JSON")
    down.set_defaults(func=run_down)


def run_up(ctx: Context, args: argparse.Namespace) -> int:
    from builder.lab.plan import lab_plan
    from builder.lab.status import lab_status
    from builder.lab.up import lab_up
    from builder.progress import ConsoleProgress

    lab = check_lab_name(args.lab or default_lab())
    host = load_host(find_host(args.host, ctx.recipes_dir))
    progress = ConsoleProgress()
    progress.begin_stage(f"lab {lab} up from {host.source.name}")
    lab_up(lab_plan(host, lab), progress=progress)
    progress.end_stage(True)
    return _show(ctx, lab_status(lab))


def run_status(ctx: Context, args: argparse.Namespace) -> int:
    from builder.lab.status import lab_status

    status = lab_status(check_lab_name(args.lab or default_lab()))
    _show(ctx, status)
    return 0


def run_down(ctx: Context, args: argparse.Namespace) -> int:
    from builder.lab.down import lab_down

    lab = check_lab_name(args.lab or default_lab())
    removed = lab_down(lab)
    ctx.out.data({"lab": lab, "namespaces": removed.namespaces, "processes": removed.processes})
    if not removed.namespaces:
        ctx.out.text(f"lab {lab}: nothing to remove")
        return 0
    ctx.out.text(f"lab {lab}: removed {', '.join(removed.namespaces)}")
    if removed.processes:
        ctx.out.text(f"  stopped {', '.join(removed.processes)}")
    return 0


def _show(ctx: Context, status: dict[str, Any]) -> int:
    ctx.out.data(status)
    if ctx.out.as_json:
        return 0
    if not status["namespaces"]:
        ctx.out.text(f"lab {status['lab']}: down")
        return 0
    state = "up" if status["up"] else "INCOMPLETE (a lab up failed or was interrupted: imgbuild lab down removes it)"
    ctx.out.text(f"lab {status['lab']}: {state}, from {status['host_file'] or 'an unreadable record'}")
    if status["problem"]:
        print(f"  {status['problem']}", file=sys.stderr)
    ctx.out.table([(n["name"], n["role"], "present" if n["exists"] else "MISSING", ", ".join(n["addresses"]) or "-")
                   for n in status["namespaces"]], header=("NAMESPACE", "ROLE", "STATE", "ADDRESSES"))
    if status["bridges"]:
        ctx.out.text()
        ctx.out.table([(b["name"], ", ".join(b["addresses"]) or "-", ", ".join(b["ports"]) or "none",
                        ", ".join(b["guests"]) or "-") for b in status["bridges"]],
                      header=("BRIDGE", "ADDRESS", "PORTS", "GUESTS"))
    for d in status["dhcp"]:
        where = d["netns"]
        ctx.out.text(f"DHCP on {d['bridge']}: dnsmasq in {where}, " + (f"pid {d['pid']}" if d["pid"] else "NOT RUNNING"))
    return 0
