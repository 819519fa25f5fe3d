"""The typed recipe: what the rest of imgbuild reads. Built only from a recipe that passed validation."""

from __future__ import annotations

import hashlib
import ipaddress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from builder.recipe.sizes import parse_size
from builder.recipe.tasks import DESKTOP_TASKS, Session, desktop_session, display_manager, task_packages
from builder.recipe.values import key_file_lines

ALWAYS_PACKAGES = ("qemu-guest-agent", "cloud-init", "openssh-server")


@dataclass(frozen=True)
class Mirror:
    host: str
    path: str
    proxy: str | None

    @property
    def url(self) -> str:
        return f"http://{self.host}{self.path}"


@dataclass(frozen=True)
class User:
    name: str
    full_name: str
    sudo: bool
    password_hash: str | None
    password_env: str | None
    ssh_keys: tuple[str, ...]
    shell: str


@dataclass(frozen=True)
class Root:
    login: bool
    password_hash: str | None
    password_env: str | None


@dataclass(frozen=True)
class Network:
    mode: Literal["dhcp", "static", "nat"]
    address: str | None
    gateway: str | None
    nameservers: tuple[str, ...]
    search: tuple[str, ...]
    bridge: str
    vlan: int | None
    mac: str
    mac_given: bool
    firewall: bool

    @property
    def is_static(self) -> bool:
        """True when the guest configures a fixed address (static, or nat with an address)."""
        return self.address is not None

    @property
    def ip(self) -> str | None:
        return str(ipaddress.ip_interface(self.address).ip) if self.address else None

    @property
    def prefix(self) -> int | None:
        return ipaddress.ip_interface(self.address).network.prefixlen if self.address else None

    @property
    def netmask(self) -> str | None:
        return str(ipaddress.ip_interface(self.address).netmask) if self.address else None


@dataclass(frozen=True)
class Disk:
    size_bytes: int
    bus: str
    cache: str
    partitioning: Literal["atomic", "home", "multi"]
    lvm: bool


@dataclass(frozen=True)
class VMHardware:
    cores: int
    memory_mib: int
    cpu: str
    display: Literal["qxl", "std", "virtio", "none"]
    spice: bool
    bios: Literal["seabios", "ovmf"]
    node: str | None = None  # Proxmox VE: pin the VM to this cluster node


@dataclass(frozen=True)
class Desktop:
    autologin: str | None  # user whose session starts at boot (lightdm autologin), None: the greeter waits
    session: Session | None  # the X session autologin starts and the check proves (None: no autologin)


@dataclass(frozen=True)
class Install:
    method: Literal["image", "installer"]
    base_iso: str | None


@dataclass(frozen=True)
class Check:
    check: Literal["ssh", "http", "service", "desktop"]
    port: int = 80
    path: str = "/"
    expect: str | None = None
    status: int = 200
    name: str | None = None
    timeout: int = 300

    @property
    def label(self) -> str:
        if self.check == "http":
            return f"http :{self.port}{self.path}"
        if self.check == "service":
            return f"service {self.name}"
        return self.check


@dataclass(frozen=True)
class Recipe:
    name: str
    description: str
    source: Path
    release: str
    arch: str
    hostname: str
    domain: str
    locale: str
    keyboard: str
    timezone: str
    mirror: Mirror
    users: tuple[User, ...]
    root: Root
    network: Network
    tasks: tuple[str, ...]
    packages: tuple[str, ...]
    desktop: Desktop
    disk: Disk
    vm: VMHardware
    install: Install
    late_commands: tuple[str, ...]
    verify: tuple[Check, ...]
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def fqdn(self) -> str:
        return f"{self.hostname}.{self.domain}"

    @property
    def admin(self) -> User:
        return self.users[0]

    @property
    def display_manager(self) -> str:
        return display_manager(list(self.tasks))

    @property
    def all_packages(self) -> tuple[str, ...]:
        """Packages to install besides the tasks: the always-installed ones, then the recipe's."""
        return tuple(dict.fromkeys((*ALWAYS_PACKAGES, *self.packages)))

    @property
    def task_packages(self) -> tuple[str, ...]:
        return tuple(task_packages(self.release, list(self.tasks)))

    def resolved(self) -> dict[str, Any]:
        """The fully resolved recipe as plain data (``imgbuild show``)."""
        data = asdict(self)
        data.pop("raw")
        data["source"] = str(self.source)
        return data


def derived_mac(name: str) -> str:
    """A stable, locally unique MAC for *name* under Proxmox's prefix BC:24:11."""
    tail = hashlib.sha256(f"imgbuild:{name}".encode()).digest()[:3]
    return "BC:24:11:" + ":".join(f"{b:02X}" for b in tail)


def build_recipe(data: dict[str, Any], source: Path) -> Recipe:
    """Typed recipe from validated, defaults-filled *data*."""
    net = data["network"]
    users = []
    for u in data["users"]:
        keys = list(u["ssh_keys"])
        for name in u["ssh_key_files"]:
            keys += key_file_lines(source.parent / Path(name).expanduser())[0]  # validated: readable, all keys
        users.append(User(
            name=u["name"], full_name=u["full_name"], sudo=u["sudo"], password_hash=u.get("password_hash"),
            password_env=u.get("password_env"), ssh_keys=tuple(dict.fromkeys(keys)), shell=u["shell"],
        ))
    display = data["vm"]["display"]
    spice = display == "spice" or (display == "auto" and bool(DESKTOP_TASKS.intersection(data["tasks"])))
    if display in ("auto", "spice"):
        display = "qxl" if spice else "std"
    checks = []
    for c in data["verify"]:
        item = {k: c[k] for k in ("check", "port", "path", "expect", "status", "name", "timeout") if k in c}
        checks.append(Check(**item))
    name = data["name"]
    autologin = data["desktop"]["autologin"]
    return Recipe(
        name=name,
        description=data["description"],
        source=source,
        release=data["release"],
        arch=data["arch"],
        hostname=data.get("hostname") or name,
        domain=data["domain"],
        locale=data["locale"],
        keyboard=data["keyboard"],
        timezone=data["timezone"],
        mirror=Mirror(**data["mirror"]),
        users=tuple(users),
        root=Root(login=data["root"]["login"], password_hash=data["root"].get("password_hash"),
                  password_env=data["root"].get("password_env")),
        network=Network(
            mode=net["mode"], address=net.get("address"), gateway=net.get("gateway"),
            nameservers=tuple(net["nameservers"]), search=tuple(net["search"]), bridge=net["bridge"],
            vlan=net["vlan"], mac=(net["mac"] or derived_mac(name)).upper(), mac_given=net["mac"] is not None,
            firewall=net["firewall"],
        ),
        tasks=tuple(data["tasks"]),
        packages=tuple(data["packages"]),
        desktop=Desktop(autologin=autologin, session=desktop_session(data["tasks"]) if autologin else None),
        disk=Disk(size_bytes=parse_size(data["disk"]["size"], bare_unit="G"), bus=data["disk"]["bus"],
                  cache=data["disk"]["cache"], partitioning=data["disk"]["partitioning"], lvm=data["disk"]["lvm"]),
        vm=VMHardware(cores=data["vm"]["cores"], memory_mib=parse_size(data["vm"]["memory"], bare_unit="M") >> 20,
                      cpu=data["vm"]["cpu"], display=display, spice=spice, bios=data["vm"]["bios"],
                      node=data["vm"].get("node")),
        install=Install(method=data["install"]["method"], base_iso=data["install"]["base_iso"]),
        late_commands=tuple(data["late_commands"]),
        verify=tuple(checks),
        raw=data,
    )
