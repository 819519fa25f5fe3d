"""host-net render: every shipped host description renders to a file ifupdown2 itself accepts, in the chapter's
five shapes, and bad descriptions are refused with file, line and field, every problem at once."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

from builder.hostnet import HostInvalid, check_host, host_schema, load_host
from builder.hostnet.docs import hosts_markdown
from builder.hostnet.ifupdown import parsed_view, syntax_check
from builder.hostnet.render import render_interfaces
from tests.net.conftest import HOSTS, REPO, SHIPPED_HOSTS, write_host


def parsed(host: str) -> dict[str, dict]:
    """The rendered file of *host* as ifupdown2 parsed it: interface name -> ifquery's JSON entry."""
    return {i["name"]: i for i in parsed_view(render_interfaces(load_host(HOSTS / f"{host}.yaml")))}


def test_the_chapter_shapes_are_all_shipped() -> None:
    assert {"chapter", "bridged", "routed", "nat", "vlan", "bond"} <= set(SHIPPED_HOSTS)


@pytest.mark.parametrize("host", SHIPPED_HOSTS)
def test_shipped_description_passes_ifupdown2_syntax_check(host: str) -> None:
    text = render_interfaces(load_host(HOSTS / f"{host}.yaml"))
    outcome = syntax_check(text)
    assert outcome.ok, f"ifup -a -s refused {host}:\n{outcome.messages}\n{text}"
    assert outcome.messages == "", outcome.messages  # not even a warning


def test_bridged_shape() -> None:
    vmbr0 = parsed("bridged")["vmbr0"]
    assert vmbr0["addr_method"] == "static" and vmbr0["auto"]
    assert vmbr0["config"] == {"address": "192.168.10.2/24", "gateway": "192.168.10.1", "bridge-ports": "eno1",
                               "bridge-stp": "off", "bridge-fd": "0"}


def test_routed_shape() -> None:
    view = parsed("routed")
    assert view["eno0"]["config"]["address"] == "198.51.100.5/29"
    assert view["eno0"]["config"]["post-up"] == ["echo 1 > /proc/sys/net/ipv4/ip_forward",
                                                 "echo 1 > /proc/sys/net/ipv4/conf/eno0/proxy_arp"]
    assert view["vmbr0"]["config"]["bridge-ports"] == "none"
    assert view["vmbr0"]["config"]["address"] == "203.0.113.17/28"


def test_nat_shape_with_the_conntrack_zone_rule() -> None:
    config = parsed("nat")["vmbr0"]["config"]
    rule = "-s '10.10.10.0/24' -o eno1 -j MASQUERADE"
    assert config["bridge-ports"] == "none"
    assert config["post-up"] == ["echo 1 > /proc/sys/net/ipv4/ip_forward", f"iptables -t nat -A POSTROUTING {rule}",
                                 "iptables -t raw -I PREROUTING -i fwbr+ -j CT --zone 1"]
    assert config["post-down"] == [f"iptables -t nat -D POSTROUTING {rule}",
                                   "iptables -t raw -D PREROUTING -i fwbr+ -j CT --zone 1"]


def test_nat_without_firewall_has_no_conntrack_zone_rule(tmp_path: Path) -> None:
    text = (HOSTS / "nat.yaml").read_text().replace("firewall: true", "firewall: false")
    rendered = render_interfaces(load_host(write_host(tmp_path, text)))
    assert "MASQUERADE" in rendered and "--zone" not in rendered


def test_vlan_shapes() -> None:
    view = parsed("vlan")
    assert view["vmbr0"]["config"]["bridge-vlan-aware"] == "yes"
    assert view["vmbr0"]["config"]["bridge-vids"] == "2-4094"
    assert view["vmbr0.5"]["config"] == {"address": "10.10.5.2/24", "gateway": "10.10.5.1"}
    assert view["vmbr1v10"]["config"]["bridge-ports"] == "eno2.10"  # the traditional per-VLAN bridge


def test_bond_shapes() -> None:
    view = parsed("bond")
    assert view["bond0"]["config"] == {"bond-slaves": "eno1 eno2", "bond-miimon": "100", "bond-mode": "802.3ad",
                                       "bond-xmit-hash-policy": "layer2+3"}
    assert view["bond1"]["config"]["bond-mode"] == "active-backup"
    assert view["bond1"]["config"]["bond-primary"] == "eno3"
    assert view["vmbr0"]["config"]["bridge-ports"] == "bond0"


def test_chapter_node_has_all_three_guest_networks() -> None:
    view = parsed("chapter")
    assert view["vmbr0"]["config"]["bridge-ports"] == "eno1"
    assert "iptables -t nat -A POSTROUTING -s '10.10.10.0/24' -o vmbr0 -j MASQUERADE" in view["vmbr1"]["config"]["post-up"]
    assert view["vmbr2"]["config"]["bridge-ports"] == "none"
    assert "echo 1 > /proc/sys/net/ipv4/conf/eno2/proxy_arp" in view["eno2"]["config"]["post-up"]


def ifupdown2_version() -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", "ifupdown2"], capture_output=True, text=True).stdout


def test_why_iface_none_is_declared() -> None:
    """The rendered file's note says ifupdown2 3.0's check refuses a bare `bridge-ports none`: still true here."""
    text = render_interfaces(load_host(HOSTS / "routed.yaml"))
    assert "\niface none inet manual\n" in text
    bare = syntax_check(text.replace("\niface none inet manual\n", "\n"))
    if ifupdown2_version().startswith("3.0"):
        assert not bare.ok and 'bridge-ports: invalid value "none"' in bare.messages
    else:  # 3.3 and later accept it: the declaration is then only redundant
        assert bare.ok, bare.messages


def test_no_none_declaration_without_a_portless_bridge() -> None:
    assert "iface none" not in render_interfaces(load_host(HOSTS / "bridged.yaml"))


def test_rendering_is_pure_and_stable() -> None:
    host = load_host(HOSTS / "chapter.yaml")
    assert render_interfaces(host) == render_interfaces(load_host(HOSTS / "chapter.yaml"))
    assert str(REPO) not in render_interfaces(host)  # no machine-specific path in the file


BAD = [
    # (description, line, field, message fragment)
    ("nics: {eno1: {address: 192.168.1.2/24}}\nbridges:\n  vmbr0: {address: 192.168.1.10/24}\n",
     3, "bridges.vmbr0.address", "subnet 192.168.1.0/24 overlaps 192.168.1.0/24 of nics.eno1.address"),
    ("nics: {eno1: }\nbridges:\n  vmbr0:\n    ports: [eno1]\n    address: 192.168.1.10/24\n    gateway: 10.0.0.1\n",
     6, "bridges.vmbr0.gateway", "10.0.0.1 is outside the subnet 192.168.1.0/24"),
    ("nics: {eno1: }\nbridges:\n  vmbr0: {ports: [eno1]}\n  vmbr1:\n    ports: [eno1]\n",
     5, "bridges.vmbr1.ports.0", "eno1 is already used by bridges.vmbr0.ports.0"),
    ("nics: {eno1: , eno2: }\nbonds:\n  bond0: {slaves: [eno1, eno2], mode: 802.3ad}\n"
     "  bond1: {slaves: [eno2, eno1], mode: active-backup}\n",
     4, "bonds.bond1.slaves.0", "eno2 is already used by bonds.bond0.slaves.1"),
    ("nics: {eno1: }\nbonds:\n  bond0:\n    slaves: [eno1]\n    mode: active-backup\n",
     4, "bonds.bond0.slaves", "a bond needs at least two NICs; bond0 has 1"),
    ("nics: {eno1: }\nvlans:\n  - raw: eno1\n    id: 4095\n", 4, "vlans.0.id", "VLAN id 4095 is outside 1-4094"),
    ("nics: {eno1: }\nvlans:\n  - {raw: eno1, id: 0}\n", 3, "vlans.0.id", "VLAN id 0 is outside 1-4094"),
    ("nics: {eno1: }\nbridges:\n  vmbr0: {ports: [eno1], vlan_aware: true, vids: '2-5000'}\n",
     3, "bridges.vmbr0.vids", "VLAN id 5000 is outside 1-4094"),
    ("nics: {eno1: }\nbridges:\n  vmbr0:\n    ports: [eno1.9999]\n", 4, "bridges.vmbr0.ports.0", "VLAN id 9999"),
    ("nics: {eno1: }\nbridges:\n  vmbr0:\n    ports: [eno2]\n", 4, "bridges.vmbr0.ports.0", "did you mean 'eno1'?"),
    ("nics: {eno1: }\nbridges:\n  vmbr0:\n    prots: [eno1]\n", 4, "bridges.vmbr0.prots", "did you mean 'ports'?"),
    ("nics: {eno1: {address: 10.0.0.2/24, gateway: 10.0.0.1}}\nbridges:\n  vmbr0:\n    address: 10.1.0.2/24\n"
     "    gateway: 10.1.0.1\n", 5, "bridges.vmbr0.gateway", "a second default gateway"),
    ("nics: {eno1: {address: 10.0.0.2/24}}\nbridges:\n  vmbr0: {ports: [eno1]}\n",
     3, "bridges.vmbr0.ports.0", "cannot carry an address of its own"),
    ("bridges:\n  vmbr1:\n    address: 10.10.10.1/24\n    nat: {out: vmbr0}\n", 4, "bridges.vmbr1.nat.out",
     "not one of the description's"),
    ("nics: {eno0: }\nbridges:\n  vmbr0:\n    address: 203.0.113.17/28\n    routed: {uplink: eno0}\n",
     5, "bridges.vmbr0.routed.uplink", "eno0 has no address"),
    ("bridges:\n  vmbr1:\n    address: 10.10.10.1/24\n    dhcp: {start: 10.10.10.1, end: 10.10.11.5}\n",
     4, "bridges.vmbr1.dhcp.end", "outside the hosts of 10.10.10.0/24"),
    ("bridges:\n  vmbr1:\n    address: 10.10.10.0/24\n", 3, "bridges.vmbr1.address", "is the network address"),
    ("nics:\n  eno1.5: {}\n", 2, "nics.eno1.5", "is not an interface name"),
    ("nics:\n  averyveryverylongname: {}\n", 2, "nics.averyveryverylongname", "at most 15 characters"),
    ("description: \"${__import__('os').system('id')}\"\n", 1, "description", "may not contain $, % or \\"),
    ("nics:\n  eno1: {comment: \"LAN \\\\\"}\n", 2, "nics.eno1.comment", "line continuation"),
    ("nics:\n  eno1: {comment: \"a\\nauto eth9\"}\n", 2, "nics.eno1.comment", "control character"),
    ("nics: {eno1: }\nbonds:\n  bond0: {slaves: [eno1, eno2], mode: active-backup, xmit_hash_policy: layer3+4}\n",
     3, "bonds.bond0.xmit_hash_policy", "only used with mode 802.3ad"),
    ("lab:\n  clients:\n    eno1: {name: lan, address: 192.168.1.1/24}\n", 3, "lab.clients.eno1",
     "not one of the description's NICs"),
]


@pytest.mark.parametrize(("text", "line", "field", "message"), BAD, ids=[b[2] for b in BAD])
def test_bad_description_names_file_line_and_field(tmp_path: Path, text: str, line: int, field: str, message: str) -> None:
    path = write_host(tmp_path, text)
    problems = [p.format(base=tmp_path) for p in check_host(path).problems]
    assert any(p.startswith(f"host.yaml:{line}: {field}: ") and message in p for p in problems), problems


FIVE = """\
nics:
  eno1:
  eno2:
bonds:
  bond0: {slaves: [eno2], mode: 802.3ad}
vlans:
  - {raw: bond0, id: 5000}
bridges:
  vmbr0:
    ports: [eno1]
    address: 192.168.1.10/24
    gateway: 192.168.2.1
  vmbr1:
    ports: [eno1]
    address: 192.168.1.20/24
"""


def test_every_problem_at_once_exit_2_no_traceback(imgbuild, tmp_path: Path) -> None:
    path = write_host(tmp_path, FIVE, "five")
    result = imgbuild("host-net", "render", str(path))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stdout == ""  # nothing rendered from a bad description
    text = result.stderr
    for where, what in [(":5: bonds.bond0.slaves:", "at least two"), (":7: vlans.0.id:", "outside 1-4094"),
                        (":12: bridges.vmbr0.gateway:", "outside the subnet"),
                        (":14: bridges.vmbr1.ports.0:", "already used"), (":15: bridges.vmbr1.address:", "overlaps")]:
        assert any(where in ln and what in ln for ln in text.splitlines()), (where, text)


def test_render_cli_stdout_file_json_and_check(imgbuild, tmp_path: Path) -> None:
    text = imgbuild("host-net", "render", "chapter")
    assert text.returncode == 0 and text.stdout == render_interfaces(load_host(HOSTS / "chapter.yaml"))
    dest = tmp_path / "interfaces"
    written = imgbuild("host-net", "render", "recipes/hosts/nat.yaml", "-o", str(dest), "--check")
    assert written.returncode == 0, written.stderr
    assert dest.read_text() == render_interfaces(load_host(HOSTS / "nat.yaml")) and "syntax check passed" in written.stderr
    data = json.loads(imgbuild("host-net", "render", "--json", "--check", "vlan").stdout)
    assert data["host"] == "vlan" and data["check"]["ok"] and "bridge-vlan-aware yes" in data["interfaces"]


def test_unknown_host_lists_the_shipped_ones(imgbuild) -> None:
    result = imgbuild("host-net", "render", "chapterr")
    assert result.returncode == 2 and "chapter" in result.stderr and "Traceback" not in result.stderr


def test_load_host_raises_host_invalid(tmp_path: Path) -> None:
    with pytest.raises(HostInvalid) as info:
        load_host(write_host(tmp_path, "nics: [eno1]\n"))
    assert info.value.exit_code == 2 and "nics" in info.value.message


def test_schema_is_valid_and_every_field_described() -> None:
    schema = host_schema()
    jsonschema.Draft202012Validator.check_schema(schema)

    def walk(node: dict, path: str) -> None:
        if "properties" in node:
            assert node.get("additionalProperties") is False, path
        for name, sub in node.get("properties", {}).items():
            assert sub.get("description"), f"{path}.{name} has no description"
            walk(sub, f"{path}.{name}")
        for key in ("items", "additionalProperties"):
            if isinstance(node.get(key), dict):
                walk(node[key], f"{path}[]")

    walk(schema, "")


@pytest.mark.parametrize("host", SHIPPED_HOSTS)
def test_shipped_description_passes_the_schema_file_alone(host: str) -> None:
    """What an editor pointing at the schema sees."""
    path = HOSTS / f"{host}.yaml"
    assert path.read_text().startswith("# yaml-language-server: $schema=../../builder/hostnet/host.schema.json")
    errors = list(jsonschema.Draft202012Validator(host_schema()).iter_errors(yaml.safe_load(path.read_text())))
    assert not errors, [e.message for e in errors]


def test_docs_are_current() -> None:
    assert (REPO / "docs" / "hosts.md").read_text() == hosts_markdown(), (
        "docs/hosts.md is stale: run python -m builder.hostnet.docs > docs/hosts.md")
