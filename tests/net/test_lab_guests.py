"""The networking chapter's claims, proven on the lab with real guests (boot tests).

One lab (recipes/hosts/chapter.yaml) and one guest per kind, shared by the module in file order:
- a bridged web server on the LAN (vmbr0) is reached on SSH and HTTP from the LAN client, with its own MAC;
- a NAT guest (vmbr1) reaches the LAN client, which sees the node's address, while the LAN client cannot open
  a connection to it (although the guest listens: the node reaches it);
- a routed guest (vmbr2) is reached by the provider's router through the node's proxy ARP.
Afterwards nothing is left: no namespace, bridge, tap, nftables rule or process, also after a make that was
interrupted (it cleans up itself) or killed outright (lab down removes its QEMU and tap).
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab import netns as ns
from builder.lab.attach import tap_name
from builder.lab.plan import netns_name
from tests.net.conftest import REPO, lab_name, no_lab_left
from tests.net.netcheck import connect, listen, mac_of, neighbour_mac, run_in

pytestmark = pytest.mark.boot

LAB = lab_name("claims")
NODE, LAN_CLIENT, PROVIDER = (netns_name(LAB, role) for role in ("node", "lan-client", "provider"))

NAT_GUEST = """\
extends: web-server
description: a web server behind the node's NAT (vmbr1)
hostname: nat-guest
network:
  mode: nat
  address: 10.10.10.20/24
  gateway: 10.10.10.1
  nameservers: [10.10.10.1]
  bridge: vmbr1
"""
ROUTED_GUEST = """\
extends: web-server
description: a web server in the routed block (vmbr2)
hostname: routed-guest
network:
  mode: static
  address: 203.0.113.18/28
  gateway: 203.0.113.17
  nameservers: [203.0.113.17]
  bridge: vmbr2
"""
SPARE_GUEST = ROUTED_GUEST.replace("routed-guest", "spare-guest").replace("203.0.113.18/28", "203.0.113.19/28")


class Lab:
    """The real CLI against one lab, with its own recipes, out dir and lab records."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.recipes, self.out, self.labs = root / "recipes", root / "out", root / "labs"
        subprocess.run(["cp", "-r", str(REPO / "recipes"), str(self.recipes)], check=True)
        for name, text in (("nat-guest", NAT_GUEST), ("routed-guest", ROUTED_GUEST), ("spare-guest", SPARE_GUEST)):
            (self.recipes / f"{name}.yaml").write_text(text)
        self.env = {**os.environ, "IMGBUILD_LAB": LAB, "IMGBUILD_LAB_DIR": str(self.labs)}

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "builder", "--recipes-dir", str(self.recipes), "--out-dir", str(self.out), *args]

    def __call__(self, *args: str, timeout: float = 1800) -> subprocess.CompletedProcess[str]:
        proc = subprocess.run(self.argv(*args), capture_output=True, text=True, timeout=timeout, env=self.env, cwd=REPO)
        sys.stderr.write(f"\n$ imgbuild {' '.join(args)}  -> {proc.returncode}\n{proc.stderr[-3000:]}\n")
        return proc

    def make(self, recipe: str) -> dict:
        result = self("make", recipe, "--target", "lab", "--keep")
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads((self.out / recipe / "report.json").read_text())

    def status(self) -> dict:
        return json.loads(self("lab", "status", "--json").stdout)


def host_view() -> tuple[set[str], str]:
    """This machine's own links and nftables ruleset (the lab must add nothing to either)."""
    links = {link["ifname"] for link in ns.ip_json("link", "show")}
    ruleset = subprocess.run(["nft", "list", "ruleset"], capture_output=True, text=True).stdout
    return links, ruleset


def our_processes(lab: Lab) -> list[str]:
    """Processes this module started: QEMU on its out dir, DHCP servers and forwards of its lab."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmd = proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            status = proc.joinpath("stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if status == "Z":
            continue
        if str(lab.out) in cmd or str(lab.labs) in cmd or ("builder.lab.forward" in cmd and NODE in cmd):
            found.append(f"{proc.name}: {cmd[:120]}")
    return found


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    runner = Lab(tmp_path_factory.mktemp("claims"))
    runner("lab", "down")
    before = host_view()
    up = runner("lab", "up")
    assert up.returncode == 0, up.stderr
    runner.host_before = before  # type: ignore[attr-defined]
    try:
        yield runner
    finally:
        for name in ("web-server", "nat-guest", "routed-guest", "spare-guest"):
            runner("destroy", name, "--target", "lab")
        runner("lab", "down")
        assert no_lab_left(LAB) == [] and our_processes(runner) == []


@pytest.fixture(scope="module")
def web(lab: Lab) -> dict:
    return lab.make("web-server")


@pytest.fixture(scope="module")
def nat(lab: Lab) -> dict:
    return lab.make("nat-guest")


@pytest.fixture(scope="module")
def routed(lab: Lab) -> dict:
    return lab.make("routed-guest")


def test_web_server_is_made_and_verified_on_the_lab_lan(lab: Lab, web: dict) -> None:
    assert web["ok"] and web["target"] == "lab" and web["vm"]["address"] == "192.168.1.250"
    assert all(c["ok"] for c in web["checks"]) and len(web["checks"]) == 3
    assert web["access"]["urls"][0].startswith("http://127.0.0.1:")  # from this machine: a loopback forward only
    bridges = {b["name"]: b for b in lab.status()["bridges"]}
    assert bridges["vmbr0"]["guests"] == ["web-server"] and tap_name("web-server", 0) in bridges["vmbr0"]["ports"]


def test_lan_client_reaches_the_web_server_over_http(web: dict) -> None:
    page = run_in(LAN_CLIENT, sys.executable, "-c",
                  "import urllib.request as u; r = u.urlopen('http://192.168.1.250/', timeout=20); "
                  "print(r.status); print(r.read().decode())")
    assert page.returncode == 0, page.stderr
    status, _, body = page.stdout.partition("\n")
    assert status == "200" and "Apache2 Debian Default Page" in body


def test_lan_client_reaches_the_web_server_over_ssh_with_the_guests_own_mac(lab: Lab, web: dict) -> None:
    out = lab.out / "web-server"
    ssh = run_in(LAN_CLIENT, "ssh", "-i", str(out / "id_ed25519"), "-o", f"UserKnownHostsFile={out / 'known_hosts'}",
                 "-o", "HostKeyAlias=web-server", "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes",
                 "-o", "ConnectTimeout=20", "admin@192.168.1.250", "hostname; ip -4 -o addr show scope global",
                 timeout=60)
    assert ssh.returncode == 0, ssh.stderr
    assert ssh.stdout.splitlines()[0] == "web-server" and "192.168.1.250/24" in ssh.stdout
    state = json.loads((lab.out / "web-server" / "vm" / "state.json").read_text())
    assert neighbour_mac(LAN_CLIENT, "192.168.1.250") == state["macs"][0].lower()  # bridged: its own MAC on the LAN


def guest_ssh(report: dict, command: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """Run *command* on a guest over imgbuild's own way in (the loopback forward from the lab's node)."""
    argv = shlex.split(report["access"]["ssh"])
    argv[-1:-1] = ["-o", "BatchMode=yes", "-o", "ConnectTimeout=20"]
    return subprocess.run([*argv, command], capture_output=True, text=True, timeout=timeout)


def test_nat_guest_reaches_the_lan_client_behind_the_nodes_address(nat: dict) -> None:
    assert nat["ok"] and nat["vm"]["address"] == "10.10.10.20"
    listener = listen(LAN_CLIENT, 9000)
    sent = guest_ssh(nat, "bash -c 'exec 3<>/dev/tcp/192.168.1.100/9000 && echo hello >&3'")
    assert sent.returncode == 0, sent.stderr
    assert listener.peer() == "192.168.1.10"  # masqueraded: the LAN client sees the node, not 10.10.10.20


def test_lan_client_cannot_open_a_connection_to_the_nat_guest(nat: dict) -> None:
    assert connect(NODE, "10.10.10.20", 22) == "connected"  # the guest listens: the node (its gateway) gets in
    refused = connect(LAN_CLIENT, "10.10.10.20", 22, timeout=10)
    assert refused.startswith("failed"), refused  # from the LAN there is no way to it
    assert connect(LAN_CLIENT, "192.168.1.250", 22) == "connected"  # while the bridged guest is right there


def test_routed_guest_is_reached_through_the_nodes_proxy_arp(routed: dict) -> None:
    assert routed["ok"] and routed["vm"]["address"] == "203.0.113.18"
    ns.ip("neigh", "flush", "all", netns=PROVIDER)
    page = run_in(PROVIDER, sys.executable, "-c",
                  "import urllib.request as u; r = u.urlopen('http://203.0.113.18/', timeout=20); print(r.status)")
    assert page.stdout.strip() == "200", page.stderr
    node_mac = mac_of(NODE, "eno2")
    assert neighbour_mac(PROVIDER, "203.0.113.18") == node_mac  # the node answered the ARP for the guest
    assert node_mac != routed_guest_mac(routed)


def routed_guest_mac(report: dict) -> str:
    out = guest_ssh(report, "cat /sys/class/net/$(ip -o route get 203.0.113.17 | awk '{print $3}')/address")
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


def test_the_lab_lists_its_guests_per_bridge(lab: Lab, web: dict, nat: dict, routed: dict) -> None:
    guests = {b["name"]: b["guests"] for b in lab.status()["bridges"]}
    assert guests == {"vmbr0": ["web-server"], "vmbr1": ["nat-guest"], "vmbr2": ["routed-guest"]}
    listed = json.loads(lab("status", "--json", "--target", "lab").stdout)
    assert {vm["name"] for vm in listed["vms"]} >= {"web-server", "nat-guest", "routed-guest"}


def start_make(lab: Lab, recipe: str) -> subprocess.Popen[str]:
    return subprocess.Popen(lab.argv("make", recipe, "--target", "lab"), env=lab.env, cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for_tap(tap: str, proc: subprocess.Popen[str], timeout: float = 600) -> None:
    deadline = time.monotonic() + timeout
    while tap not in {link["ifname"] for link in ns.ip_json("link", "show", netns=NODE)}:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{tap} never appeared"
        time.sleep(0.2)


def test_an_interrupted_make_leaves_no_guest_behind(lab: Lab, routed: dict) -> None:
    proc = start_make(lab, "spare-guest")
    wait_for_tap(tap_name("spare-guest", 0), proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err[-2000:]
    assert tap_name("spare-guest", 0) not in {link["ifname"] for link in ns.ip_json("link", "show", netns=NODE)}
    assert not [p for p in our_processes(lab) if "spare-guest" in p]


def test_lab_down_after_a_killed_make_leaves_nothing(lab: Lab, web: dict, nat: dict, routed: dict) -> None:
    proc = start_make(lab, "spare-guest")
    wait_for_tap(tap_name("spare-guest", 0), proc)
    proc.send_signal(signal.SIGKILL)  # its QEMU runs on, detached, in the lab
    proc.communicate()
    assert [p for p in our_processes(lab) if "spare-guest" in p and "qemu" in p]
    down = lab("lab", "down")
    assert down.returncode == 0 and "qemu-system" in down.stdout, down.stdout
    assert no_lab_left(LAB) == [] and our_processes(lab) == []
    links, ruleset = host_view()
    before_links, before_rules = lab.host_before  # type: ignore[attr-defined]
    assert {n for n in links - before_links if n.startswith(("tap", "vmbr", "eno", "veth"))} == set()
    assert ruleset == before_rules or ("10.10.10.0/24" not in ruleset and "fwbr" not in ruleset)
