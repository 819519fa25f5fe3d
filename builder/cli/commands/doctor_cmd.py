"""imgbuild doctor: what a Proxmox VE target offers, and whether its token may do what imgbuild needs."""

from __future__ import annotations

import argparse

from builder.cli.context import Context
from builder.errors import InvalidInput
from builder.pipeline.jobs import vm_spec
from builder.recipe import load_recipe
from builder.targets.pve.cluster import fmt_gib


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("doctor", help="check a Proxmox VE target: version, nodes, storages, networks, privileges",
                       description="Connect to a Proxmox VE target and report its version, the nodes (online or "
                                   "not), each node's storages (content types, shared), bridges and SDN vnets, and the "
                                   "API token's effective privileges against what imgbuild needs on this version for "
                                   "RECIPE's jobs (default: make, template, clone and the desktop check), naming the "
                                   "pveum commands for anything missing. Changes nothing. Exit status 1 when "
                                   "something is missing or too old.")
    p.add_argument("recipe", metavar="RECIPE", nargs="?", help="check for this recipe's jobs (its bridge, NAT, node)")
    p.add_argument("--target", metavar="NAME", default=None,
                   help="the Proxmox VE target (default: pve, from PROXMOX_* variables)")
    p.add_argument("--insecure", action="store_true",
                   help="do not verify the TLS certificate (prints a warning; avoid)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=run)


def run(ctx: Context, args: argparse.Namespace) -> int:
    from builder.targets.pve.connect import open_pve_target
    from builder.targets.pve.doctor import diagnose

    name = args.target or "pve"
    if name == "local":
        raise InvalidInput("doctor checks a Proxmox VE target; the local target needs nothing from it")
    recipe = load_recipe(args.recipe, ctx.recipes_dir) if args.recipe else None
    target = open_pve_target(name, ctx.out_dir, insecure=args.insecure, check=False)
    try:
        spec = vm_spec(recipe, disk_source=None, cdroms=()) if recipe else None
        diag = diagnose(target, spec, method=recipe.install.method if recipe else "image",
                        console=any(c.check == "desktop" for c in recipe.verify) if recipe else True)
    finally:
        target.close()
    ctx.out.data(diag.as_dict())
    out = ctx.out
    out.text(f"{diag.target}: Proxmox VE {diag.version} at {diag.url}"
             + ("" if diag.supported else "  (TOO OLD: imgbuild needs 8.4 or later)"))
    out.text()
    out.table([(n.name, "online" if n.online else "OFFLINE", n.version or "-",
                f"{fmt_gib(n.maxmem - n.mem)} of {fmt_gib(n.maxmem)}" if n.mem is not None and n.maxmem else "-",
                f"{n.cpu:.0%}" if n.cpu is not None else "-") for n in diag.nodes],
              header=("NODE", "STATUS", "VERSION", "MEMORY FREE", "CPU"))
    for n in diag.nodes:
        if not n.online:
            continue
        out.text()
        out.text(f"{n.name}:")
        for s in n.storages:
            out.text(f"  storage {s['storage']:<14} {s['type'] or '-':<8} {','.join(s['content']):<40}"
                     + (" shared" if s["shared"] else ""))
        for b in n.bridges:
            out.text(f"  {b['type']:<7} {b['iface']:<14} {b['cidr'] or ''}")
    if diag.sdn_zones:
        out.text()
        out.text("SDN zones: " + ", ".join(f"{z['zone']} ({z['type']}{', ' + z['state'] if z['state'] else ''})"
                                           for z in diag.sdn_zones))
    if diag.sdn_vnets:
        out.text("SDN vnets: " + ", ".join(f"{v['vnet']} (zone {v['zone']}{', ' + v['state'] if v['state'] else ''})"
                                           for v in diag.sdn_vnets))
    out.text()
    out.text(f"token {diag.token} may (GET /access/permissions):" + ("" if diag.privileges else " nothing at all"))
    for path, privs in diag.privileges.items():
        out.text(f"  {path}: {', '.join(privs)}")
    out.text()
    out.text("what imgbuild needs here:")
    for need in diag.needs:
        lacks = need["missing"]
        partial = f"; lacks {', '.join(lacks)}" if lacks and len(lacks) < len(need["privileges"]) else ""
        out.text(f"  {'MISSING' if lacks else 'ok':<8} {need['path']}: {', '.join(need['privileges'])} "
                 f"({need['why']}{partial})")
    out.text()
    if diag.ok:
        out.text(f"{diag.target}: ready for imgbuild")
        return 0
    for problem in diag.problems:
        out.text(f"problem: {problem}")
    if diag.advice:
        out.text(diag.advice)
    return 1
