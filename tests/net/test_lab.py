"""imgbuild lab up|status|down on the chapter's node: the namespaces, bridges and DHCP servers it builds, what
status reports, refusing a second lab up, saying which privileges are missing, and leaving nothing behind:
after lab down, after an interrupted lab up, and after a lab up killed outright."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.lab import netns as ns
from builder.lab.plan import lab_prefix, netns_name
from tests.net.conftest import REPO, lab_name, no_lab_left
from tests.net.netcheck import addresses, bridge_ports, links, nft_ruleset

LAB = lab_name("cli")


def cli(*args: str, labs: Path, timeout: float = 120, user: list[str] | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "IMGBUILD_LAB_DIR": str(labs)}
    cmd = [*(user or []), sys.executable, "-m", "builder", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def labs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("labs")
    os.chmod(path, 0o755)
    return path


@pytest.fixture(scope="module")
def chapter_lab(labs: Path) -> Iterator[dict]:
    cli("lab", "down", "--lab", LAB, labs=labs)
    try:
        up = cli("lab", "up", "--lab", LAB, "--json", labs=labs)
        assert up.returncode == 0, up.stderr
        yield json.loads(up.stdout)
    finally:
        down = cli("lab", "down", "--lab", LAB, labs=labs)
        assert down.returncode == 0, down.stderr
        assert no_lab_left(LAB) == []


def test_lab_up_builds_the_chapter_node(chapter_lab: dict) -> None:
    assert chapter_lab["up"] and chapter_lab["host_file"].endswith("recipes/hosts/chapter.yaml")
    roles = {n["role"]: n for n in chapter_lab["namespaces"]}
    assert set(roles) == {"node", "lan-client", "provider"} and all(n["exists"] for n in roles.values())
    assert roles["lan-client"]["addresses"] == ["eth0 192.168.1.100/24"]
    bridges = {b["name"]: b for b in chapter_lab["bridges"]}
    assert bridges["vmbr0"]["addresses"] == ["192.168.1.10/24"] and bridges["vmbr0"]["ports"] == ["eno1"]
    assert bridges["vmbr1"]["addresses"] == ["10.10.10.1/24"] and bridges["vmbr1"]["ports"] == []
    assert bridges["vmbr2"]["addresses"] == ["203.0.113.17/28"] and bridges["vmbr2"]["ports"] == []
    assert {d["bridge"]: d["netns"] for d in chapter_lab["dhcp"]} == {
        "vmbr0": netns_name(LAB, "lan-client"), "vmbr1": netns_name(LAB, "node")}
    assert all(d["pid"] for d in chapter_lab["dhcp"])


def test_lab_node_is_configured_by_ifupdown2_as_rendered(chapter_lab: dict) -> None:
    node = netns_name(LAB, "node")
    assert bridge_ports(node, "vmbr0") == ["eno1"] and addresses(node, "eno2") == ["198.51.100.5/29"]
    assert ns.sysctl(node, "net/ipv4/conf/eno2/proxy_arp") == "1" and ns.sysctl(node, "net/ipv4/ip_forward") == "1"
    assert 'oifname "vmbr0" ip saddr 10.10.10.0/24' in nft_ruleset(node)
    assert links(netns_name(LAB, "provider"))["eth0"]["link_netnsid"] is not None  # a veth to the node


def dhcp_offer(lab: str, node: str, bridge: str, tmp: Path) -> dict[str, str]:
    """Run Debian's dhclient once on *bridge* (from a probe namespace plugged into it); what it was given."""
    probe = netns_name(lab, "dhcp-probe")
    ns.add_netns(probe)
    try:
        ns.ip("link", "add", "dhcpprobe0", "netns", node, "type", "veth", "peer", "name", "eth0", "netns", probe)
        ns.ip("link", "set", "dhcpprobe0", "master", bridge, "up", netns=node)
        ns.ip("link", "set", "eth0", "up", netns=probe)
        argv = ns.in_netns(probe, ["dhclient", "-d", "-1", "-v", "-sf", "/bin/true", "-lf", str(tmp / "leases"),
                                   "-pf", str(tmp / "dhclient.pid"), "eth0"])
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        assert proc.stdout is not None
        seen: list[str] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not any("bound to" in s for s in seen):
            line = proc.stdout.readline()
            if not line:
                break
            seen.append(line.strip())
        proc.kill()
        proc.wait()
        lease = (tmp / "leases").read_text()
        return {"log": "\n".join(seen), "lease": lease}
    finally:
        ns.kill_all(probe)
        ns.del_netns(probe)
        ns.ip("link", "del", "dhcpprobe0", netns=node, check=False)


def test_dhcp_on_the_lan_comes_from_the_lan_with_the_lans_router(chapter_lab: dict, tmp_path: Path) -> None:
    got = dhcp_offer(LAB, netns_name(LAB, "node"), "vmbr0", tmp_path)
    assert "DHCPACK of 192.168.1.1" in got["log"] and "from 192.168.1.100" in got["log"], got["log"]
    assert "option routers 192.168.1.1;" in got["lease"], got["lease"]


def test_dhcp_on_the_nat_network_comes_from_the_node(chapter_lab: dict, tmp_path: Path) -> None:
    got = dhcp_offer(LAB, netns_name(LAB, "node"), "vmbr1", tmp_path)
    assert "DHCPACK of 10.10.10.1" in got["log"] and "from 10.10.10.1" in got["log"], got["log"]
    assert "option routers 10.10.10.1;" in got["lease"], got["lease"]


def test_status_text_and_json(chapter_lab: dict, labs: Path) -> None:
    text = cli("lab", "status", "--lab", LAB, labs=labs)
    assert text.returncode == 0 and f"lab {LAB}: up" in text.stdout
    for needle in (netns_name(LAB, "node"), "lan-client", "vmbr0", "192.168.1.10/24", "DHCP on vmbr1"):
        assert needle in text.stdout, text.stdout
    data = json.loads(cli("lab", "status", "--lab", LAB, "--json", labs=labs).stdout)
    assert data["up"] and data["guests"] == []


def test_a_second_lab_up_is_refused(chapter_lab: dict, labs: Path) -> None:
    again = cli("lab", "up", "--lab", LAB, labs=labs)
    assert again.returncode == 1 and f"lab {LAB} is already up" in again.stderr and "lab down" in again.stderr
    assert json.loads(cli("lab", "status", "--lab", LAB, "--json", labs=labs).stdout)["up"]  # and nothing broke


def test_lab_up_names_the_missing_privileges(labs: Path) -> None:
    nobody = cli("lab", "up", "--lab", lab_name("priv"), labs=labs,
                 user=["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups"])
    assert nobody.returncode == 1 and "Traceback" not in nobody.stderr
    for needed in ("root", "CAP_NET_ADMIN", "CAP_SYS_ADMIN"):
        assert needed in nobody.stderr, nobody.stderr
    no_net_admin = cli("lab", "up", "--lab", lab_name("priv"), labs=labs,
                       user=["setpriv", "--bounding-set=-net_admin", "--inh-caps=-net_admin"])
    assert no_net_admin.returncode == 1 and "CAP_NET_ADMIN" in no_net_admin.stderr
    assert "CAP_SYS_ADMIN" not in no_net_admin.stderr and "root (" not in no_net_admin.stderr
    assert no_lab_left(lab_name("priv")) == []


def test_a_kernel_refusal_is_named_before_anything_is_made(labs: Path) -> None:
    result = cli("lab", "up", "recipes/hosts/bond.yaml", "--lab", lab_name("bond"), labs=labs)
    if result.returncode == 0:  # a kernel with bonding: then it must have worked
        assert cli("lab", "down", "--lab", lab_name("bond"), labs=labs).returncode == 0
        return
    assert result.returncode == 1 and "kernel cannot build bond" in result.stderr and "bond0, bond1" in result.stderr
    assert no_lab_left(lab_name("bond")) == [] and not (labs / lab_name("bond")).exists()


def start_lab_up(lab: str, labs: Path, extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    env = {**os.environ, "IMGBUILD_LAB_DIR": str(labs), **(extra_env or {})}
    return subprocess.Popen([sys.executable, "-m", "builder", "lab", "up", "--lab", lab], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_netns(name: str, proc: subprocess.Popen[str], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ns.exists(name):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, f"{name} never appeared"
        time.sleep(0.005)


def lab_up_signalled(lab: str, labs: Path, sig: int) -> subprocess.Popen[str]:
    """`lab up` sent *sig* as soon as its node namespace exists (whatever an earlier run left removed first)."""
    cli("lab", "down", "--lab", lab, labs=labs)
    proc = start_lab_up(lab, labs)
    wait_for_netns(netns_name(lab, "node"), proc)
    proc.send_signal(sig)
    return proc


def test_lab_down_removes_what_a_killed_lab_up_left(labs: Path) -> None:
    lab = lab_name("crash")
    lab_up_signalled(lab, labs, signal.SIGKILL).communicate()
    left = [n for n in ns.list_netns() if n.startswith(lab_prefix(lab))]
    assert left, "the kill came too late to leave anything: the test proves nothing"
    status = json.loads(cli("lab", "status", "--lab", lab, "--json", labs=labs).stdout)
    assert not status["up"] and status["namespaces"]
    down = cli("lab", "down", "--lab", lab, labs=labs)
    assert down.returncode == 0 and "removed" in down.stdout
    assert no_lab_left(lab) == [] and not (labs / lab).exists()


def test_lab_down_works_without_the_record(labs: Path) -> None:
    """Even with the record gone, the namespaces are found by their names, and processes in them stopped."""
    lab = lab_name("norecord")
    up = cli("lab", "up", "--lab", lab, labs=labs)
    assert up.returncode == 0, up.stderr
    (labs / lab / "state.json").unlink()
    down = cli("lab", "down", "--lab", lab, labs=labs)
    assert down.returncode == 0 and "dnsmasq" in down.stdout
    assert no_lab_left(lab) == []


def test_an_interrupted_lab_up_removes_what_it_made(labs: Path, tmp_path: Path) -> None:
    """Ctrl-C while ifupdown2 configures the node. The moment is made certain, not raced for: an ``ifup``
    first on PATH marks that lab up reached it and then waits (one process: ``exec sleep``), so the
    interrupt lands there on a fast machine and on a loaded one alike."""
    lab = lab_name("intr")
    cli("lab", "down", "--lab", lab, labs=labs)
    shim, reached = tmp_path / "bin", tmp_path / "ifup-reached"
    shim.mkdir()
    (shim / "ifup").write_text(f'#!/bin/sh\n: > "{reached}"\nexec sleep 120\n')
    (shim / "ifup").chmod(0o755)
    proc = start_lab_up(lab, labs, {"PATH": f"{shim}:{os.environ.get('PATH', '')}"})
    deadline = time.monotonic() + 60
    while not reached.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "lab up never reached ifup"
        time.sleep(0.02)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert no_lab_left(lab) == [] and not (labs / lab).exists()


def test_lab_down_of_nothing(labs: Path) -> None:
    result = cli("lab", "down", "--lab", lab_name("nothing"), labs=labs)
    assert result.returncode == 0 and "nothing to remove" in result.stdout


def test_a_loopback_forward_reaches_into_the_lab_from_the_node(chapter_lab: dict, labs: Path) -> None:
    """What the lab target uses to reach guests: 127.0.0.1:PORT here, the connection made from the node."""
    import socket

    from builder.lab.forward import start_forward, stop_forward
    from tests.net.netcheck import listen

    listener = listen(netns_name(LAB, "lan-client"), 8022)
    port, pid = start_forward(netns_name(LAB, "node"), "192.168.1.100", 8022)
    try:
        assert pid in ns.pids(netns_name(LAB, "node"))  # one of the lab's processes: lab down stops it
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            assert listener.peer() == "192.168.1.10"  # the node's address on the LAN
        listening = subprocess.run(["ss", "-Hltn", f"sport = :{port}"], capture_output=True, text=True).stdout
        assert f"127.0.0.1:{port}" in listening  # on this machine: loopback only
    finally:
        stop_forward(pid)


def test_a_guest_tap_joins_the_named_bridge_and_shows_in_status(chapter_lab: dict, labs: Path) -> None:
    """What the lab target does once QEMU made a guest's tap in the node namespace (made by hand here)."""
    from builder.errors import ImgbuildError
    from builder.lab.attach import check_bridge, plug, tap_name

    node = netns_name(LAB, "node")
    os.environ["IMGBUILD_LAB_DIR"] = str(labs)
    tap = tap_name("web-server", 0)
    ns.ip("tuntap", "add", tap, "mode", "tap", netns=node)
    try:
        plug(LAB, tap, "web-server", "vmbr0")
        assert tap in bridge_ports(node, "vmbr0")
        status = json.loads(cli("lab", "status", "--lab", LAB, "--json", labs=labs).stdout)
        assert status["guests"] == ["web-server"]
        assert {b["name"]: b["guests"] for b in status["bridges"]}["vmbr0"] == ["web-server"]
        with pytest.raises(ImgbuildError, match="has no bridge vmbr9 .it has vmbr0, vmbr1, vmbr2"):
            check_bridge(LAB, "vmbr9")
        with pytest.raises(ImgbuildError, match="not VLAN-aware"):
            check_bridge(LAB, "vmbr0", vlan=5)
        with pytest.raises(ImgbuildError, match=f"lab {lab_name('nolab')} is not up"):
            check_bridge(lab_name("nolab"), "vmbr0")
    finally:
        os.environ.pop("IMGBUILD_LAB_DIR", None)
        ns.ip("link", "del", tap, netns=node, check=False)
    assert bridge_ports(node, "vmbr0") == ["eno1"]
