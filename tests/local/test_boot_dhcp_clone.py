"""A DHCP guest on the local target gets its address from slirp's DHCP (10.0.2.15); it powers itself off
(wait_stopped), becomes a template, and a linked clone with a new MAC and a new seed boots as a new
cloud-init instance."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from builder.errors import ImgbuildError
from builder.image import GoldenImage
from builder.targets.base import VM, DiskSpec, GuestNetwork, NicSpec, VMSpec
from builder.targets.local import LocalTarget, derive_mac
from builder.targets.local.agent import GuestAgent
from tests.local.guest import KeyPair, dhcp_network, ssh_run, user_data, write_seed

pytestmark = pytest.mark.boot

MAC = "52:54:00:d1:c2:b3"
DHCP_ADDRESS = "10.0.2.15"


@dataclass
class Booted:
    target: LocalTarget
    vm: VM
    host_key: KeyPair
    user_key: KeyPair
    seeds: Path


@pytest.fixture(scope="module")
def booted(local_target: LocalTarget, web_image: GoldenImage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Booted]:
    host_key, user_key = KeyPair.generate(), KeyPair.generate()
    seeds = tmp_path_factory.mktemp("seeds")
    seed_path = write_seed(
        seeds / "dhcp.iso", instance_id="dhcp-1", hostname="dhcp1",
        user=user_data("dhcp1", user_key, host_key), network=dhcp_network(MAC),
    )  # fmt: skip
    target = local_target
    image = target.stage(web_image.path, "image", label="web-server")
    seed = target.stage(seed_path, "iso", label="dhcp-seed")
    spec = VMSpec(
        name="dhcp",
        disks=(DiskSpec(8 * 1024**3, source=image),),
        cdroms=(seed,),
        nics=(NicSpec(MAC),),
        network=GuestNetwork("dhcp"),
        guest_ports=(22,),
    )
    vm = target.create_vm(spec)
    target.start(vm)
    yield Booted(target, vm, host_key, user_key, seeds)  # local_target's teardown destroys every VM


def test_dhcp_guest_gets_its_address(booted: Booted) -> None:
    addresses = booted.target.guest_addresses(booted.vm, timeout=300)
    assert DHCP_ADDRESS in addresses, addresses
    ep = booted.target.endpoint(booted.vm, DHCP_ADDRESS, 22)
    assert ssh_run(ep.port, booted.host_key, booted.user_key, "hostname", timeout=300).strip() == "dhcp1"


def test_template_and_linked_clone_boot_as_a_new_instance(booted: Booted) -> None:
    target, vm = booted.target, booted.vm
    # The guest powers itself off (as the installer does at its end); wait_stopped sees QEMU exit.
    ep = target.endpoint(vm, DHCP_ADDRESS, 22)
    ssh_run(ep.port, booted.host_key, booted.user_key, "sudo systemctl poweroff --no-block", timeout=60)
    target.wait_stopped(vm, timeout=180)
    assert not target.is_running(vm)
    target.make_template(vm)
    with pytest.raises(ImgbuildError, match="template"):
        target.start(vm)

    clone_mac = derive_mac("dhcp-clone", 0)
    seed_path = write_seed(
        booted.seeds / "clone.iso", instance_id="dhcp-clone-1", hostname="dhcp-clone",
        user=user_data("dhcp-clone", booted.user_key, booted.host_key), network=dhcp_network(clone_mac),
    )  # fmt: skip
    seed = target.stage(seed_path, "iso", label="clone-seed")
    clone = target.clone(vm, "dhcp-clone", full=False, seed=seed)
    assert clone.data["macs"] == [clone_mac]
    assert clone.data["cdroms"][0] == seed.ref
    target.start(clone)
    assert DHCP_ADDRESS in target.guest_addresses(clone, timeout=300)
    assert _agent_hostname(clone, timeout=120) == "dhcp-clone"

    with pytest.raises(ImgbuildError, match="linked clones"):
        target.destroy(vm)
    target.destroy(clone)
    target.destroy(vm)
    assert target.find_vm("dhcp") is None and target.find_vm("dhcp-clone") is None


def _agent_hostname(vm: VM, timeout: float) -> str:
    agent = GuestAgent(Path(vm.data["sockdir"]) / "qga.sock")
    deadline = time.monotonic() + timeout
    name = ""
    while time.monotonic() < deadline:
        try:
            name = agent.call("guest-get-host-name")["host-name"]
        except ImgbuildError:
            pass
        if name == "dhcp-clone":
            break
        time.sleep(2)
    return name
