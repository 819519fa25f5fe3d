"""imgbuild host-net render: a host description as /etc/network/interfaces for a Proxmox VE node."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from builder.cli.context import Context
from builder.errors import ImgbuildError
from builder.fsutil import write_atomic
from builder.hostnet import find_host, load_host
from builder.hostnet.render import render_interfaces


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("host-net", help="render a Proxmox VE node's /etc/network/interfaces from a host description",
                       description="Host network descriptions (YAML, schema builder/hostnet/host.schema.json; examples "
                                   "in recipes/hosts/) describe a Proxmox VE node's NICs, bonds, VLANs and bridges.")
    actions = p.add_subparsers(dest="action", metavar="ACTION")
    actions.required = True
    r = actions.add_parser("render", help="print /etc/network/interfaces for a host description",
                           description="Validate HOST (every problem at once as FILE:LINE: field: message, exit 2) "
                                       "and print the /etc/network/interfaces stanzas for it: bridged, routed, NAT, "
                                       "VLAN and bond setups as the Proxmox VE guide writes them.")
    r.add_argument("host", metavar="HOST", help="a host description file, or a name in RECIPES/hosts/ (e.g. chapter)")
    r.add_argument("-o", "--output", type=Path, metavar="FILE", help="write the file here (atomically) instead of stdout")
    r.add_argument("--check", action="store_true",
                   help="also run ifupdown2's own parser and syntax check on the result (ifup -a -s, in a private "
                        "mount namespace; needs root and the Debian package ifupdown2); exit 1 if it objects")
    r.add_argument("--json", action="store_true", help="print JSON (the text, and the check's outcome)")
    r.set_defaults(func=run_render)


def run_render(ctx: Context, args: argparse.Namespace) -> int:
    path = find_host(args.host, ctx.recipes_dir)
    host = load_host(path)
    text = render_interfaces(host)
    result: dict = {"host": host.name, "file": str(path), "interfaces": text, "output": None, "check": None}
    if args.output is not None:
        write_atomic(args.output, text)
        result["output"] = str(args.output)
        print(f"{host.name}: wrote {args.output}", file=sys.stderr)
    elif not ctx.out.as_json:
        ctx.out.stream.write(text)
    status = 0
    if args.check:
        from builder.hostnet.ifupdown import syntax_check

        outcome = syntax_check(text)
        result["check"] = {"ok": outcome.ok, "exit_status": outcome.exit_status, "messages": outcome.messages}
        if not outcome.ok:
            if ctx.out.as_json:
                status = 1
            else:
                raise ImgbuildError(f"ifupdown2's syntax check refused the rendered file (exit {outcome.exit_status})",
                                    detail=outcome.messages)
        else:
            print(f"{host.name}: ifupdown2 syntax check passed", file=sys.stderr)
    ctx.out.data(result)
    return status
