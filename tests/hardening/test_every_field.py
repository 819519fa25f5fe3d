"""No recipe field silently ignored.

One recipe sets every field away from its default. For the image method it is built and booted ONCE
(bookworm, UEFI, a /25 static address, a custom MAC, two users, root login, a mirror proxy ...) and each
field is checked where it takes effect: inside the guest over SSH, on QEMU's command line, in the report.
For the installer method each field is checked in the rendered preseed (valid for
``debconf-set-selections -c``), in its late script or in the seed cloud-init applies at first boot.
A field a method cannot honour is refused for that method by validation.

Fields checked elsewhere, where they take effect: ``network.bridge/vlan/firewall`` are Proxmox VE NIC
settings (checked here in the VM config imgbuild sends, and on the simulator in tests/pve); ``mirror.host``
and ``path`` stay deb.debian.org/debian in the boot (the only mirror these machines reach; the guest's apt
sources are checked to name it); ``desktop.autologin`` needs a desktop image (tests/pipeline, lxde-desktop).
"""

from __future__ import annotations

import base64
import json
import re
import shlex
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.image.build import image_path
from builder.pipeline import specs
from builder.recipe import load_recipe
from builder.secrets.keys import ensure_keypair
from builder.secrets.passwords import hash_password
from builder.targets.pve import vmconfig
from tests.debconf import check_preseed
from tests.hardening.conftest import REPO, assert_no_traceback, cli
from tests.hardening.crash import exit_status, start
from tests.hardening.forked import poll
from tests.hardening.httpproxy import forwarding_proxy

PROXY_PASSWORD = "Pr0xy-Secret"


def write_recipe(recipes: Path, *, method: str, proxy: str, keys: Path) -> dict[str, str]:
    """The every-field recipe (``allfields``) in *recipes*; returns the values the checks look for."""
    carol_key = ensure_keypair(keys / "carol", comment="carol@allfields").public_key
    file_key = ensure_keypair(keys / "carol-file", comment="carol-file@allfields").public_key
    (recipes / "carol.pub").write_text(f"# carol's second key\n{file_key} carol-file@allfields\n")
    (recipes / "debian.iso").write_bytes(b"")
    want = {
        "carol_hash": hash_password("carol's password"),
        "root_hash": hash_password("root's password", "sha512"),
        "carol_key": carol_key, "file_key": file_key,
    }
    installer_only = ("  partitioning: home\n  lvm: true\n" if method == "installer" else "")
    (recipes / "allfields.yaml").write_text(f"""\
extends: base
description: Every field away from its default (tests/hardening/test_every_field.py)
release: bookworm
hostname: fieldtest
domain: example.test
locale: de_DE.UTF-8
keyboard: de
timezone: Europe/Berlin
mirror:
  host: deb.debian.org
  path: /debian
  proxy: {proxy}
users:
  - name: admin
    full_name: Field Admin
    sudo: true
    shell: /bin/sh
  - name: carol
    full_name: Carol Example
    sudo: false
    shell: /usr/bin/zsh
    password_hash: '{want["carol_hash"]}'
    ssh_keys: ['{carol_key} carol@allfields']
    ssh_key_files: [carol.pub]
root:
  login: true
  password_hash: '{want["root_hash"]}'
network:
  mode: static
  address: 192.168.77.130/25
  gateway: 192.168.77.129
  nameservers: [192.168.77.129]
  search: [example.test, lab.test]
  bridge: vmbr1
  vlan: 10
  mac: 52:54:00:ab:cd:ef
  firewall: true
tasks: [ssh-server, web-server]
packages: [zsh, htop]
disk:
  size: 12G
  cache: writeback
{installer_only}vm:
  cores: 3
  memory: 1536
  cpu: qemu64
  display: virtio
  bios: ovmf
install:
  method: {method}
{"  base_iso: debian.iso" if method == "installer" else ""}
late_commands:
  - echo late-proof > /root/late-proof
  - touch /etc/late-second
verify:
  - check: ssh
  - check: service
    name: apache2
  - check: http
    port: 80
    path: /
    expect: Apache2 Debian Default Page
    status: 200
    timeout: 900
""")
    return want


@pytest.fixture
def recipes(tmp_path: Path) -> Path:
    path = tmp_path / "recipes"
    path.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", path)
    return path


# --- what a method cannot honour -------------------------------------------------------------------


@pytest.mark.parametrize(("field", "text", "message"), [
    ("disk.partitioning", "disk:\n  partitioning: home\n", "disk.partitioning: 'home': the image method"),
    ("disk.lvm", "disk:\n  lvm: true\n", "disk.lvm: LVM: the image method"),
    ("install.base_iso", "install:\n  base_iso: debian.iso\n", "install.base_iso: the image method uses no"),
])
def test_the_image_method_refuses_what_it_cannot_honour(field: str, text: str, message: str, recipes: Path,
                                                         tmp_path: Path) -> None:
    (recipes / "debian.iso").write_bytes(b"")
    (recipes / "r.yaml").write_text("extends: base\n" + text)
    proc = cli("validate", "r", recipes=recipes)
    assert proc.returncode == 2 and re.search(r"r\.yaml:\d+: " + re.escape(message), proc.stdout), proc.stdout
    (recipes / "i.yaml").write_text("extends: base\n" + text + "install:\n  method: installer\n"
                                    if field != "install.base_iso" else
                                    "extends: base\ninstall:\n  method: installer\n  base_iso: debian.iso\n")
    assert cli("validate", "i", recipes=recipes).returncode == 0  # the installer method honours it
    proc = cli("make", "i", "--method", "image", recipes=recipes, out=tmp_path / "out")
    assert proc.returncode == 2 and "the image method cannot honour" in proc.stderr and field in proc.stderr
    assert_no_traceback(proc)


# --- the installer method: the rendered preseed -----------------------------------------------------


def preseed_answers(text: str) -> dict[str, str]:
    answers = {}
    for line in text.splitlines():
        if line.strip() and not line.startswith("#"):
            _owner, question, _kind, *value = line.split(None, 3)
            answers[question] = value[0] if value else ""
    return answers


def test_the_installer_method_carries_every_field(recipes: Path, tmp_path: Path) -> None:
    want = write_recipe(recipes, method="installer", proxy=f"http://apt:{PROXY_PASSWORD}@192.168.77.129:3142/",
                        keys=tmp_path / "keys")
    out = tmp_path / "out"
    proc = cli("render", "allfields", out=out, recipes=recipes)
    assert proc.returncode == 0, proc.stderr
    rendered = out / "allfields"
    check = check_preseed(rendered / "preseed.cfg")
    assert check.returncode == 0 and not check.stderr, check.stderr
    answers = preseed_answers((rendered / "preseed.cfg").read_text())
    expected = {
        "mirror/suite": "bookworm", "mirror/udeb/suite": "bookworm",
        "netcfg/get_hostname": "fieldtest", "netcfg/get_domain": "example.test",
        "debian-installer/locale": "de_DE.UTF-8", "localechooser/supported-locales": "de_DE.UTF-8",
        "keyboard-configuration/xkb-keymap": "de", "time/zone": "Europe/Berlin",
        "mirror/http/hostname": "deb.debian.org", "mirror/http/directory": "/debian",
        "mirror/http/proxy": f"http://apt:{PROXY_PASSWORD}@192.168.77.129:3142/",
        "passwd/username": "admin", "passwd/user-fullname": "Field Admin",
        "passwd/root-login": "true", "passwd/root-password-crypted": want["root_hash"],
        "netcfg/get_ipaddress": "192.168.77.130", "netcfg/get_netmask": "255.255.255.128",
        "netcfg/get_gateway": "192.168.77.129", "netcfg/get_nameservers": "192.168.77.129",
        "tasksel/first": "ssh-server, web-server",
        "partman-auto/choose_recipe": "home", "partman-auto/method": "lvm",
        "partman-partitioning/choose_label": "gpt",  # bios: ovmf
    }
    assert {q: answers.get(q) for q in expected} == expected
    assert {"zsh", "htop"} <= set(answers["pkgsel/include"].split())
    assert "sudo" in answers["passwd/user-default-groups"].split()
    # users after the first, shells, keys, sudo rules and late_commands: the late script, run in the target
    late = base64.b64decode(re.search(r"echo (\S+) \| base64 -d > /root/imgbuild-late.sh",
                                      answers["preseed/late_command"]).group(1)).decode()  # type: ignore[union-attr]
    assert "usermod -s /bin/sh admin" in late and "useradd -m -s /usr/bin/zsh -c 'Carol Example' carol" in late
    assert f"usermod -p '{want['carol_hash']}' carol" in late and "gpasswd -d carol sudo" in late
    assert want["carol_key"] in late and want["file_key"] in late
    commands = base64.b64decode(re.search(r"echo (\S+) \| base64 -d > /var/lib/imgbuild/late-commands.sh",
                                          late).group(1)).decode()  # type: ignore[union-attr]
    assert "echo late-proof > /root/late-proof" in commands and "touch /etc/late-second" in commands
    # search domains and the MAC: the seed cloud-init applies at the installed system's first boot
    network = (rendered / "network-config").read_text()
    assert "52:54:00:ab:cd:ef" in network and "example.test" in network and "lab.test" in network
    # hardware: the VM imgbuild creates; the base ISO: what build remasters
    recipe = load_recipe("allfields", recipes)
    spec = specs.vm_spec(recipe, disk_source=None, cdroms=())
    assert (spec.cores, spec.memory_mib, spec.cpu, spec.display, spec.bios) == (3, 1536, "qemu64", "virtio", "ovmf")
    assert (spec.disks[0].size_bytes, spec.disks[0].cache) == (12 << 30, "writeback")
    assert recipe.install.base_iso == "debian.iso"


# --- the image method: one boot ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def booted(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """``make allfields --keep`` (image method) through a loopback proxy; the facts the guest reports."""
    root = tmp_path_factory.mktemp("allfields")
    recipes = root / "recipes"
    recipes.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", recipes)
    out = root / "out"
    with forwarding_proxy() as (url, seen, auth):
        proxy = url.replace("http://", f"http://apt:{PROXY_PASSWORD}@")
        want = write_recipe(recipes, method="image", proxy=proxy, keys=root / "keys")
        image = image_path(specs.image_spec(load_recipe("allfields", recipes)))
        rebuilt = ""
        if image.exists():  # built before: the proxy is not part of an image's key, so watch a rebuild use it
            rebuild = start(out, "make", "allfields", "--refresh-image", recipes=recipes)
            try:
                poll("apt through the proxy", lambda: seen, timeout=1800)
            finally:
                rebuild.send_signal(signal.SIGTERM)
            assert exit_status(rebuild, 300) == 143, rebuild.output()[-3000:]
            rebuilt = rebuild.output()
        made = cli("make", "allfields", "--keep", out=out, recipes=recipes, timeout=5400)
    try:
        assert made.returncode == 0, made.stderr[-4000:]
        report = json.loads((out / "allfields" / "report.json").read_text())
        *ssh, destination = shlex.split(report["access"]["ssh"])
        ssh = [*ssh, "-o", "BatchMode=yes", destination, "sudo sh -s"]
        facts = subprocess.run(ssh, input=GUEST_FACTS, capture_output=True, text=True, timeout=300, cwd=root)
        assert facts.returncode == 0, facts.stderr
        lines = [ln.split("=", 1) for ln in facts.stdout.splitlines() if "=" in ln]
        yield {"want": want, "report": report, "out": out, "recipes": recipes, "made": made, "rebuilt": rebuilt,
               "seen": seen,
               "auth": auth, "facts": {k: [v for kk, v in lines if kk == k] for k, _ in lines}}
    finally:
        cli("destroy", "allfields", out=out, recipes=recipes)


GUEST_FACTS = r"""
echo "hostname=$(hostname)"; echo "fqdn=$(hostname -f)"
echo "release=$(cut -d. -f1 /etc/debian_version)"
echo "locale=$(. /etc/default/locale; echo "$LANG")"
echo "keyboard=$( (. /etc/default/keyboard && echo "$XKBLAYOUT") 2>/dev/null || echo none)"
echo "timezone=$(readlink -f /etc/localtime)"
echo "sources=$(cat /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null | grep -o 'http://[^ ]*' | sort -u)"
echo "proxy=$(apt-config dump | grep -ci proxy)"
getent passwd admin carol | sed 's/^/passwd=/'
echo "groups_admin=$(id -nG admin)"; echo "groups_carol=$(id -nG carol)"
grep -E '^(root|carol):' /etc/shadow | cut -d: -f1,2 | sed 's/^/shadow=/'
sed 's/^/key_carol=/' /home/carol/.ssh/authorized_keys
ip -4 -o addr show eth0 | awk '{print "addr=" $4}'
ip route show default | sed 's/^/route=/'
echo "mac=$(cat /sys/class/net/eth0/address)"
grep '^search' /etc/resolv.conf | sed 's/^/search=/'
dpkg-query -W -f='pkg=${Package} ${db:Status-Status}\n' zsh htop apache2 openssh-server
echo "disk=$(lsblk -bdno SIZE /dev/vda)"; echo "rootfs=$(df -B1 --output=size / | tail -1 | tr -d ' ')"
echo "cpus=$(nproc)"; echo "memkib=$(awk '/MemTotal/ {print $2}' /proc/meminfo)"
echo "cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "efi=$(test -d /sys/firmware/efi && echo yes || echo no)"
for d in /sys/bus/pci/devices/*; do case "$(cat $d/class)" in 0x03*) echo "gpu=$(cat $d/vendor):$(cat $d/device)";; esac; done
echo "late=$(cat /root/late-proof) $(test -e /etc/late-second && echo second)"
"""


def fact(booted: dict, key: str) -> str:
    values = booted["facts"].get(key) or [""]
    return values[0]


@pytest.mark.boot
def test_identity_locale_time_and_release(booted: dict) -> None:
    assert (fact(booted, "hostname"), fact(booted, "fqdn")) == ("fieldtest", "fieldtest.example.test")
    assert fact(booted, "release") == "12"  # bookworm
    assert fact(booted, "locale") == "de_DE.UTF-8"
    assert fact(booted, "timezone").endswith("/Europe/Berlin")
    assert "Every field away from its default" in cli("list", recipes=booted["recipes"]).stdout  # description


@pytest.mark.boot
def test_keyboard(booted: dict) -> None:
    assert fact(booted, "keyboard") == "de"


@pytest.mark.boot
def test_mirror_and_proxy(booted: dict) -> None:
    assert fact(booted, "sources").startswith("http://deb.debian.org/debian")
    assert booted["seen"] and all(u.startswith("http://deb.debian.org/debian/") for u in booted["seen"])
    assert all(a and a.startswith("Basic ") for a in booted["auth"])  # the proxy's credentials were used ...
    assert fact(booted, "proxy") == "0"  # ... at build time only: the image keeps no proxy
    shown = booted["made"].stdout + booted["made"].stderr + booted["rebuilt"]
    shown += (booted["out"] / "allfields" / "report.json").read_text()
    assert PROXY_PASSWORD not in shown


@pytest.mark.boot
def test_users_and_root(booted: dict) -> None:
    want = booted["want"]
    passwd = {line.split(":")[0]: line.split(":") for line in booted["facts"]["passwd"]}
    assert passwd["admin"][4].startswith("Field Admin") and passwd["admin"][6] == "/bin/sh"
    assert passwd["carol"][4].startswith("Carol Example") and passwd["carol"][6] == "/usr/bin/zsh"
    assert "sudo" in fact(booted, "groups_admin").split() and "sudo" not in fact(booted, "groups_carol").split()
    shadow = dict(line.split(":", 1) for line in booted["facts"]["shadow"])
    assert shadow == {"root": want["root_hash"], "carol": want["carol_hash"]}  # root login: its password set
    keys = " ".join(booted["facts"]["key_carol"])
    assert want["carol_key"] in keys and want["file_key"] in keys


@pytest.mark.boot
def test_network(booted: dict) -> None:
    assert fact(booted, "addr") == "192.168.77.130/25"
    assert fact(booted, "route").startswith("default via 192.168.77.129")
    assert fact(booted, "mac") == "52:54:00:ab:cd:ef"
    assert fact(booted, "search").split()[1:] == ["example.test", "lab.test"]
    # bridge, VLAN and firewall belong to a Proxmox VE NIC: the configuration imgbuild sends there
    spec = specs.vm_spec(load_recipe("allfields", booted["recipes"]), disk_source=None, cdroms=())
    params = vmconfig.create_params(spec, vmid=100, disk_storage="local-lvm")
    assert params["net0"] == "virtio=52:54:00:AB:CD:EF,bridge=vmbr1,firewall=1,tag=10"


@pytest.mark.boot
def test_software_and_late_commands(booted: dict) -> None:
    assert sorted(booted["facts"]["pkg"]) == ["apache2 installed", "htop installed", "openssh-server installed",
                                              "zsh installed"]
    assert fact(booted, "late") == "late-proof second"


@pytest.mark.boot
def test_hardware(booted: dict) -> None:
    assert int(fact(booted, "disk")) == 12 << 30 and int(fact(booted, "rootfs")) > 10 << 30  # grown to the disk
    assert fact(booted, "cpus") == "3"
    assert 1200 * 1024 < int(fact(booted, "memkib")) <= 1536 * 1024
    assert fact(booted, "cpu").startswith("QEMU Virtual CPU")  # qemu64
    assert fact(booted, "efi") == "yes"  # bios: ovmf
    assert "0x1af4:0x1050" in booted["facts"]["gpu"]  # display: virtio (virtio-gpu)
    argv = json.loads((booted["out"] / "allfields" / "vm" / "qemu.argv").read_text())
    assert any("cache=writeback" in a for a in argv)  # disk.cache


@pytest.mark.boot
def test_the_recipes_checks_ran(booted: dict) -> None:
    checks = {c["check"]: c for c in booted["report"]["checks"]}
    assert set(checks) == {"ssh", "service apache2", "http :80/"} and all(c["ok"] for c in checks.values())
