"""Run the PVE simulator as a process (for benchmarks and out-of-process clients).

    python -m tests.pvesim --port 0 --token 'root@pam!imgbuild=SECRET' --data-dir DIR

Prints one JSON line on stdout (url, api_url, fingerprint, ca_file, token_id, node, data_dir; never
the secret) and serves until SIGTERM/SIGINT. The token may also come from $PVESIM_TOKEN, which
keeps the secret out of the process list. Faults and inspection: the ``/_pvesim/...`` control
endpoints (see README.md), authenticated with the same token.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import threading
from pathlib import Path

from tests.pvesim.cluster import three_nodes
from tests.pvesim.schema import DEFAULT_VERSION, SUPPORTED_VERSIONS
from tests.pvesim.simulator import DEFAULT_TOKEN, PveSimulator


def grant_documented_role(sim: PveSimulator, token: str) -> None:
    """What docs/pve-target.md tells an administrator to run, for *token* (USER@REALM!ID=SECRET)."""
    from builder.targets.pve import privileges

    full_id, _, secret = token.partition("=")
    user = full_id.split("!", 1)[0]
    sim.add_token(full_id, secret, privsep=True)
    sim.add_role(privileges.ROLE, privileges.role_privileges(int(sim.version.split(".")[0])))
    for path in ("/vms", "/storage", "/nodes", "/sdn/zones/localnetwork"):
        sim.grant(path, user, privileges.ROLE)
        sim.grant(path, full_id, privileges.ROLE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.pvesim", description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1", help="address to listen on (loopback only)")
    parser.add_argument("--port", type=int, default=0, help="0: an ephemeral port (printed)")
    parser.add_argument("--token", default=os.environ.get("PVESIM_TOKEN", DEFAULT_TOKEN),
                        help="USER@REALM!TOKENID=SECRET (default: $PVESIM_TOKEN)")
    parser.add_argument("--data-dir", type=Path, help="where storages live (default: a temporary directory)")
    parser.add_argument("--node", default="pve")
    parser.add_argument("--cluster", action="store_true",
                        help="three nodes (pve1, pve2 online on 127.0.0.1/.2, pve3 offline) with a shared storage")
    parser.add_argument("--pve-version", choices=SUPPORTED_VERSIONS, default=DEFAULT_VERSION,
                        help="the PVE API schema to enforce (and version to report)")
    parser.add_argument("--backend", choices=("fake", "qemu"), default="fake")
    parser.add_argument("--task-duration", type=float, default=0.05, help="seconds every task takes at least")
    parser.add_argument("--auth-delay", type=float, default=0.2, help="delay before a 401 answer")
    parser.add_argument("--role-token", default=os.environ.get("PVESIM_ROLE_TOKEN"),
                        help="USER@REALM!TOKENID=SECRET: a privilege-separated token (and its user) granted the "
                             "role imgbuild documents (default: $PVESIM_ROLE_TOKEN)")
    args = parser.parse_args(argv)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        parser.error("the simulator listens on loopback only")
    backend = None
    if args.backend == "qemu":
        from tests.pvesim.qemu_backend import QemuBackend

        backend = QemuBackend()  # its own short temporary directory: unix socket paths stay short
    try:
        sim = PveSimulator(token=args.token, version=args.pve_version, node=args.node, host=args.host, port=args.port,
                           data_dir=args.data_dir, nodes=three_nodes() if args.cluster else None,
                           backend=backend, task_duration=args.task_duration, auth_delay=args.auth_delay)
        if args.role_token:
            grant_documented_role(sim, args.role_token)
    except ValueError as exc:
        parser.error(str(exc))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    sim.start()
    try:
        print(json.dumps(sim.info()), flush=True)
        stop.wait()
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
