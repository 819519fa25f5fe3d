"""One real ``imgbuild make RECIPE --target sim`` for a boot test module: the simulator runs the VM in QEMU
(QemuBackend: the volumes it holds, TCG) and the checks reach the guest through an SSH jump host.

The guest's address is not routable from this machine, so the targets file names a jump host
(tests/pve/jumphost.py, its host key pinned) whose ``direct-tcpip`` channels to guest:port end at the
simulator's loopback forward for that VM and port: the production jump-host code path carries the checks.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from subprocess import CompletedProcess

import pytest

from tests.pve.conftest import SECRET_ENV, cli_env, imgbuild, write_targets_file
from tests.pve.jumphost import JumpServer
from tests.pvesim.backends import AgentUnavailable
from tests.pvesim.qemu_backend import QemuBackend
from tests.pvesim.simulator import PveSimulator


def guest_route(sim: PveSimulator) -> Callable[[str, int], tuple[str, int] | None]:
    """Where this machine reaches guest *host*:*port*: the simulator's forward of the VM that has *host*."""

    def resolve(host: str, port: int) -> tuple[str, int] | None:
        for vmid in sim.vm_ids():
            if not sim.backend.is_running(vmid):
                continue
            try:
                interfaces = sim.backend.agent_interfaces(vmid)
            except AgentUnavailable:
                continue
            addresses = {a.get("ip-address") for i in interfaces for a in i.get("ip-addresses") or []}
            if host in addresses:
                try:
                    return sim.forward(vmid, port)
                except KeyError:
                    return None
        return None

    return resolve


@dataclass
class Made:
    sim: PveSimulator
    jump: JumpServer
    proc: CompletedProcess[str]
    out: Path
    env: dict[str, str]


@contextlib.contextmanager
def made_on_sim(tmp: Path, recipe: str, *make_args: str,
                bridges: tuple[str, ...] | dict[str, str | None] = ("vmbr0",),
                guest_ports: tuple[int, ...] = (22, 80), timeout: float = 1800) -> Iterator[Made]:
    """``imgbuild make RECIPE --target sim *make_args``; afterwards the VM is destroyed, QEMU stopped, and any
    request the simulator rejected fails the module."""
    sim = PveSimulator(backend=QemuBackend(accel="tcg", guest_ports=guest_ports), bridges=bridges).start()  # type: ignore[arg-type]
    try:
        with JumpServer(guest_route(sim), tmp) as jump:
            known = tmp / "jump_known_hosts"
            known.write_text(jump.known_hosts_line())
            targets = write_targets_file(tmp / "targets.yaml", sim, task_timeout=600, jump_host={
                "host": "127.0.0.1", "port": jump.port, "user": "jump", "key_file": str(jump.client_key_file),
                "known_hosts": str(known)})
            env = cli_env(tmp, IMGBUILD_TARGETS=str(targets), **{SECRET_ENV: sim.token.secret})
            proc = imgbuild("make", recipe, "--target", "sim", *make_args, env=env, timeout=timeout)
            try:
                yield Made(sim, jump, proc, tmp / "out", env)
            finally:
                imgbuild("destroy", recipe, "--target", "sim", env=env, timeout=300)
    finally:
        rejected = sim.unexpected_rejections()
        sim.stop()  # stops QEMU
        if rejected:
            pytest.fail("the PVE simulator rejected: " + "; ".join(map(str, rejected)), pytrace=False)
