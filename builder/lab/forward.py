"""A loopback TCP forward into a lab: how this machine reaches a lab guest's port without joining its network.

The forward is a small process of its own. It binds 127.0.0.1:PORT in this machine's network namespace,
then moves itself into the lab's node namespace (setns), so every connection it opens to the guest starts
from the node, as imgbuild's connections to a PVE guest start from the node (the jump host). Nothing of
the lab is routed to this machine; the listening socket is the only thing on this side. Once in the node
namespace the process is one of the lab's: `lab down` stops it with everything else there.

Run as ``python -m builder.lab.forward NETNS ADDRESS PORT``; it prints ``ready HOST_PORT`` when listening.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import socket
import subprocess
import sys
import threading

from builder.errors import ImgbuildError
from builder.lab.netns import NETNS_DIR

CLONE_NEWNET = 0x40000000
MARKER = "builder.lab.forward"  # in the forward's command line (guards against pid reuse)


def enter_netns(netns: str) -> None:
    """Move this (single-threaded) process into *netns*; sockets opened before keep their namespace."""
    fd = os.open(NETNS_DIR / netns, os.O_RDONLY)
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns into {netns}: {os.strerror(err)}")
    finally:
        os.close(fd)


def _pump(a: socket.socket, b: socket.socket) -> None:
    with a, b:
        pair = {a: b, b: a}
        while True:
            readable, _, _ = select.select(list(pair), [], [], 3600)
            if not readable:
                return
            for src in readable:
                data = src.recv(65536)
                if not data:
                    return
                pair[src].sendall(data)


def _serve(listener: socket.socket, address: str, port: int) -> None:
    while True:
        client, _ = listener.accept()
        try:
            upstream = socket.create_connection((address, port), timeout=30)
            upstream.settimeout(None)
        except OSError:
            client.close()  # the guest refused or is not there (yet): the caller sees a closed connection
            continue
        threading.Thread(target=_pump, args=(client, upstream), daemon=True).start()


def main(argv: list[str]) -> int:
    netns, address, port = argv[0], argv[1], int(argv[2])
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))  # in this machine's namespace, loopback only
    listener.listen(16)
    enter_netns(netns)
    print(f"ready {listener.getsockname()[1]}", flush=True)
    devnull = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(devnull, fd)
    _serve(listener, address, port)
    return 0


def start_forward(netns: str, address: str, port: int) -> tuple[int, int]:
    """Start a forward to *address*:*port* inside *netns*; (loopback port, pid of the forward)."""
    if not (NETNS_DIR / netns).exists():
        raise ImgbuildError(f"network namespace {netns} does not exist: is the lab up? (imgbuild lab status)")
    argv = [sys.executable, "-m", MARKER, netns, address, str(port)]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    assert proc.stdout is not None and proc.stderr is not None
    line = proc.stdout.readline().decode(errors="replace").split()
    if len(line) != 2 or line[0] != "ready":
        proc.kill()
        _, err = proc.communicate(timeout=10)
        raise ImgbuildError(f"the loopback forward to {address}:{port} in {netns} did not start",
                            detail=err.decode(errors="replace")[-2000:])
    proc.stdout.close()
    proc.stderr.close()
    return int(line[1]), proc.pid


def stop_forward(pid: int) -> None:
    from builder.targets.local.state import process_alive

    if process_alive(pid, MARKER):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, 15)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
