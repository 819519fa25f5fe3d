"""The parameter checks themselves: PVE's own messages and paths for each kind of mistake."""

from __future__ import annotations

import re

import pytest

from tests.pvesim import formats
from tests.pvesim.api import served_routes
from tests.pvesim.formats import format_size, parse_size
from tests.pvesim.schema import SUPPORTED_VERSIONS, ApiSchema, parse_property_string, print_property_string
from tests.pvesim.server import decode_urlencoded

API = ApiSchema.load()
CREATE = API.find("POST", "/nodes/{node}/qemu")
BASE = {"node": "pve", "vmid": "100"}


@pytest.fixture(autouse=True, params=SUPPORTED_VERSIONS, ids=lambda v: f"pve{v}")
def schema_version(request: pytest.FixtureRequest) -> str:
    """Every check runs against both schemas (the messages are pve-common's in both)."""
    global API, CREATE
    API = ApiSchema.load(request.param)
    CREATE = API.find("POST", "/nodes/{node}/qemu")
    return str(request.param)


def errors(**params: str) -> dict[str, str]:
    return API.validate(CREATE, {**BASE, **params})


def test_the_vm_this_project_creates_passes() -> None:
    assert errors(
        name="web-server", memory="2048", cores="2", cpu="kvm64", ostype="l26", vga="qxl", scsihw="virtio-scsi-single",
        net0="virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20",
        virtio0="file=local-lvm:32,cache=none,format=raw", ide2="local:iso/seed.iso,media=cdrom",
        ide0="none,media=cdrom", boot="order=virtio0;ide2", agent="enabled=1",
        ipconfig0="ip=192.168.1.250/24,gw=192.168.1.1", cicustom="user=local:snippets/user.yaml",
        sshkeys="ssh-ed25519%20AAAAC3NzaC1lZDI1NTE5AAAAIA%20me%40host", description="built by imgbuild", start="0",
    ) == {}


@pytest.mark.parametrize(
    ("params", "expected"),
    [
        ({"foo": "1"}, {"foo": "property is not defined in schema and the schema does not allow additional properties"}),
        ({"start": "True"}, {"start": "type check ('boolean') failed - got 'True'"}),
        ({"start": "true"}, {"start": "type check ('boolean') failed - got 'true'"}),
        ({"cores": "two"}, {"cores": "type check ('integer') failed - got 'two'"}),
        ({"cores": "0"}, {"cores": "value must have a minimum value of 1"}),
        ({"ostype": "linux"}, {"ostype": "value 'linux' does not have a value in the enumeration "
                                          "'other, wxp, w2k, w2k3, w2k8, wvista, win7, win8, win10, win11, l24, l26, solaris'"}),
        ({"name": "web_server"}, {"name": "invalid format - value does not look like a valid DNS name\n"}),
        ({"net0": "virtio=BD:24:11:00:00:01,bridge=vmbr0"},
         {"net0": "invalid format - format error\nnet0.macaddr: invalid format - value does not look like a valid unicast MAC address\n\n"}),  # noqa: E501
        ({"net0": "virtio,bridge=vmbr0,tag=5000"},
         {"net0": "invalid format - format error\nnet0.tag: value must have a maximum value of 4094\n"}),
        ({"net0": "virtio,bridge=vmbr0,firewall=maybe"},
         {"net0": "invalid format - format error\nnet0.firewall: type check ('boolean') failed - got 'maybe'\n"}),
        ({"net0": "virtio,bridge=vmbr0,speed=10"},
         {"net0": "invalid format - invalid key in comma-separated list property: speed\n"}),
        ({"virtio0": "local-lvm:32,cache=fast"},
         {"virtio0": "invalid format - format error\nvirtio0.cache: value 'fast' does not have a value in the enumeration "
                     "'none, writethrough, writeback, unsafe, directsync'\n"}),
        ({"virtio0": "cache=none"},
         {"virtio0": "invalid format - format error\nvirtio0.file: property is missing and it is not optional\n"}),
        ({"virtio0": "file=local-lvm:32,file=x"},
         {"virtio0": "invalid format - duplicate key in comma-separated list property: file\n"}),
        ({"boot": "order=virtio0;floppy0"},
         {"boot": "invalid format - format error\nboot.order: invalid format - invalid boot device 'floppy0'\n\n"}),
        ({"agent": "enabled=2"}, {"agent": "invalid format - format error\nagent.enabled: type check ('boolean') failed - got '2'\n"}),  # noqa: E501
        ({"ipconfig0": "ip=192.168.1.250,gw=192.168.1.1"},
         {"ipconfig0": "invalid format - format error\nipconfig0.ip: invalid format - value does not look like a valid ipv4 network configuration\n\n"}),  # noqa: E501
        ({"ipconfig0": "gw=192.168.1.1"},
         {"ipconfig0": "invalid format - format error\nipconfig0.ip: missing property - 'ipconfig0.gw' requires this property\n"}),  # noqa: E501
        ({"cicustom": "user=snippets/user.yaml"},
         {"cicustom": "invalid format - format error\ncicustom.user: invalid format - unable to parse volume ID 'snippets/user.yaml'\n\n"}),  # noqa: E501
        ({"cpu": "pentium9"}, {"cpu": "invalid format - Built-in cputype 'pentium9' is not defined (missing 'custom-' prefix?)\n"}),  # noqa: E501
        ({"sshkeys": "ssh-ed25519 AAAA me@host"}, {"sshkeys": "invalid format - invalid urlencoded string: ssh-ed25519 AAAA me@host\n"}),  # noqa: E501
        ({"serial0": "socketx"}, {"serial0": "value does not match the regex pattern"}),
        ({"net0": "virtio,bridge=vmbr0,trunks=10;x"},
         {"net0": "invalid format - format error\nnet0.trunks: value does not match the regex pattern\n"}),
    ],
)
def test_pve_messages(params: dict[str, str], expected: dict[str, str]) -> None:
    assert errors(**params) == expected


def test_missing_and_path_parameters() -> None:
    assert API.validate(CREATE, {"node": "pve"}) == {"vmid": "property is missing and it is not optional"}
    assert API.validate(CREATE, {"node": "pve", "vmid": "99"}) == {
        "vmid": "invalid format - value does not look like a valid VM ID\n"
    }
    assert API.validate(CREATE, {"node": "p_v_e", "vmid": "100"}) == {
        "node": "invalid format - value does not look like a valid node name\n"
    }


def test_property_string_booleans_accept_perl_spellings_top_level_only_0_1() -> None:
    for word in ("1", "on", "yes", "true", "TRUE", "0", "off", "no", "false"):
        assert errors(net0=f"virtio,bridge=vmbr0,firewall={word}") == {}, word
    assert errors(agent="1") == {}  # default key
    assert errors(onboot="1") == {}
    assert errors(onboot="yes") == {"onboot": "type check ('boolean') failed - got 'yes'"}


@pytest.mark.parametrize(("prefix", "count"), sorted(formats.NUMBERED.items()))
def test_numbered_options_are_expanded(prefix: str, count: int) -> None:
    endpoint = next(e for e in API.endpoints if f"{prefix}0" in e.properties)
    props = endpoint.properties
    assert f"{prefix}0" in props and f"{prefix}{count - 1}" in props
    assert f"{prefix}{count}" not in props


def test_numbered_option_bounds_over_http_shape() -> None:
    assert errors(net31="virtio,bridge=vmbr0") == {}
    assert "net32" in errors(net32="virtio,bridge=vmbr0")
    assert errors(scsi30="local-lvm:1") == {}
    assert "scsi31" in errors(scsi31="local-lvm:1")
    assert "virtio16" in errors(virtio16="local-lvm:1")
    assert "ide4" in errors(ide4="none,media=cdrom")
    assert "sata6" in errors(sata6="local-lvm:1")
    assert errors(unused255="local-lvm:vm-100-disk-9") == {}


def test_drive_string_parses_to_its_sub_schema() -> None:
    fmt = CREATE.properties["virtio0"]["format"]
    drive = parse_property_string(fmt, "local-lvm:0,import-from=local:import/web.qcow2,cache=none,format=qcow2", "virtio0")
    assert drive == {"file": "local-lvm:0", "import-from": "local:import/web.qcow2", "cache": "none", "format": "qcow2"}
    cd = parse_property_string(CREATE.properties["ide2"]["format"], "local:iso/seed.iso,media=cdrom", "ide2")
    assert cd == {"file": "local:iso/seed.iso", "media": "cdrom"}


def test_net_keyalias_round_trip() -> None:
    fmt = CREATE.properties["net0"]["format"]
    net = parse_property_string(fmt, "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=yes,tag=20", "net0")
    assert net == {"model": "virtio", "macaddr": "BC:24:11:00:00:01", "bridge": "vmbr0", "firewall": "1", "tag": "20"}
    assert print_property_string(net, fmt) == "virtio=BC:24:11:00:00:01,bridge=vmbr0,firewall=1,tag=20"


def test_sizes() -> None:
    assert parse_size("32G") == 32 << 30 and parse_size("1.5G") == 3 << 29 and parse_size("7") == 7
    assert parse_size("32g") is None
    assert [format_size(n) for n in (512, 1024, 3 << 20, 32 << 30, 2 << 40, (1 << 30) + 1024)] == [
        "512", "1K", "3M", "32G", "2T", "1048577K",
    ]


def test_form_decoding_splits_like_perl() -> None:
    assert decode_urlencoded("net0=virtio%3DBC%3A24%3A11%3A00%3A00%3A01&a=b+c") == {
        "net0": "virtio=BC:24:11:00:00:01", "a": "b c",
    }
    # An unencoded '=' inside a value: PVE keeps only the part before it.
    assert decode_urlencoded("net0=virtio=BC:24:11:00:00:01") == {"net0": "virtio"}
    assert decode_urlencoded("k=1&k=2") == {"k": "1\x002"}


def test_every_format_the_schema_names_is_coded() -> None:
    """A format used by a served endpoint is coded by hand, or explicitly refused as not simulated."""
    names: set[str] = set()

    def walk(schema: dict) -> None:
        fmt = schema.get("format")
        if isinstance(fmt, str):
            names.add(re.sub(r"-(list|opt)$", "", fmt))
        elif isinstance(fmt, dict):
            for sub in fmt.values():
                walk(sub)
        for sub in (schema.get("properties") or {}).values():
            walk(sub)

    served = served_routes()
    for endpoint in API.endpoints:
        if (endpoint.method, endpoint.path) in served:
            walk(endpoint.parameters)
    known = set(formats.CODE_FORMATS) | set(formats.HASH_FORMATS) | formats.NOT_SIMULATED | {"pve-qm-bootdev"}
    assert names - known == set()
    # the hash formats' own sub-formats too
    for fmt in formats.HASH_FORMATS.values():
        for sub in fmt.values():
            if isinstance(sub.get("format"), str):
                assert re.sub(r"-(list|opt)$", "", sub["format"]) in known


def test_not_simulated_formats_are_refused_loudly() -> None:
    msg = errors(hostpci0="0000:01:00.0")["hostpci0"]
    assert "not simulated" in msg
