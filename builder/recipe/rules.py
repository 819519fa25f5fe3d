"""Rules the schema cannot express: value formats, cross-field consistency, files that must exist.

Runs on a recipe that passed the schema, with defaults filled in. Returns (field path, message) pairs.
"""

from __future__ import annotations

import difflib
import ipaddress
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

from builder.recipe import values as v
from builder.recipe.problems import FieldPath
from builder.recipe.sizes import format_size, parse_size
from builder.recipe.tasks import DESKTOP_TASKS, SESSIONS, display_manager, tasks_for

# Free-text fields where non-ASCII is fine (they never reach a shell word or a debconf key).
TEXT_FIELDS = {("description",), ("users", "*", "full_name"), ("verify", "*", "expect"), ("late_commands", "*")}
MULTILINE_FIELDS = {("late_commands", "*")}
MIN_DISK = 2 << 30
MIN_MEMORY = 512 << 20
MAX_DISK = 64 << 40  # far beyond a lab VM; qemu-img and lvmthin take it
MAX_MEMORY = 4 << 40  # qemu-server's limit ($MAX_MEM = 4194304 MiB in PVE/QemuServer/Memory.pm)


def _generic(path: FieldPath) -> tuple:
    return tuple("*" if isinstance(p, int) else p for p in path)


def string_problems(data: Any, path: FieldPath = ()) -> list[tuple[FieldPath, str]]:
    """Control characters anywhere; non-ASCII outside the free-text fields."""
    found: list[tuple[FieldPath, str]] = []
    if isinstance(data, dict):
        for key, value in data.items():
            found += string_problems(value, (*path, key))
    elif isinstance(data, list):
        for i, value in enumerate(data):
            found += string_problems(value, (*path, i))
    elif isinstance(data, str):
        shape = _generic(path)
        bad = v.control_chars(data, allow="\t\n" if shape in MULTILINE_FIELDS else "")
        if not bad and shape not in TEXT_FIELDS:
            bad = v.ascii_only(data)
        if bad:
            found.append((path, bad))
    return found


Found = list[tuple[FieldPath, str]]


def rule_problems(data: dict[str, Any], recipe_file: Path) -> Found:
    """Every rule problem. Each group of rules is guarded: where the schema already reported a value of the
    wrong shape, the rules that would trip over it are skipped instead of crashing, so a recipe with many
    mistakes still gets them all reported in one run."""
    groups: list[Callable[[], Found]] = [
        lambda: _identity_problems(data),
        lambda: _mirror_problems(data["mirror"]),
        lambda: _user_problems(data["users"], recipe_file),
        lambda: _root_problems(data["root"]),
        lambda: _network_problems(data["network"]),
        lambda: _software_problems(data),
        lambda: _desktop_problems(data),
        lambda: _hardware_problems(data),
        lambda: _install_problems(data, recipe_file),
        lambda: method_problems(data, data["install"]["method"]),
        lambda: _verify_problems(data["verify"], data["tasks"]),
    ]
    return run_guarded(groups)


def method_problems(data: dict[str, Any], method: str) -> Found:
    """Fields *method* cannot honour, refused rather than silently ignored (``make --method`` checks
    them too). The image method boots a copy of a golden image with one root filesystem: partitioning,
    LVM and an installer ISO are the installer method's."""
    found: Found = []
    if method != "image":
        return found
    check = _checker(found)
    why = "the image method boots a golden image with one root filesystem; this is for install.method: installer"
    if data["disk"]["partitioning"] != "atomic":
        check(("disk", "partitioning"), f"{data['disk']['partitioning']!r}: {why}")
    if data["disk"]["lvm"]:
        check(("disk", "lvm"), f"LVM: {why}")
    if data["install"]["base_iso"]:
        check(("install", "base_iso"), "the image method uses no installer ISO; this is for install.method: installer")
    return found


def run_guarded(groups: list[Callable[[], Found]]) -> Found:
    """The problems every group finds; a group that trips over a value of the wrong shape (which the schema
    has reported already) is skipped instead of crashing the run."""
    found: Found = []
    for group in groups:
        try:
            found += group()
        except (TypeError, KeyError, AttributeError, IndexError, ValueError):
            continue
    return found


def _checker(found: Found) -> Callable[[FieldPath, str | None], None]:
    def check(path: FieldPath, message: str | None) -> None:
        if message:
            found.append((path, message))
    return check


def _identity_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    check = _checker(found)

    if "hostname" in data:
        check(("hostname",), v.hostname(data["hostname"]))
    check(("domain",), v.domain(data["domain"]))
    if not v.LOCALE.match(data["locale"]):
        check(("locale",), f"{data['locale']!r} is not a locale such as en_US.UTF-8")
    if not v.KEYBOARD.match(data["keyboard"]):
        check(("keyboard",), f"{data['keyboard']!r} is not a keyboard layout such as us or de")
    tz = data["timezone"]
    if not v.TIMEZONE.match(tz):
        check(("timezone",), f"{tz!r} is not a time zone name such as Europe/Berlin")
    else:
        zones = zoneinfo.available_timezones()
        if zones and tz not in zones:
            check(("timezone",), f"unknown time zone {tz!r}")
    return found


def _mirror_problems(mirror: dict[str, Any]) -> Found:
    found: Found = []
    check = _checker(found)
    check(("mirror", "host"), v.mirror_host(mirror["host"]))
    if not v.MIRROR_PATH.match(mirror["path"]):
        check(("mirror", "path"), f"{mirror['path']!r} is not a URL path starting with /")
    if mirror["proxy"] is not None and not v.PROXY.match(mirror["proxy"]):
        check(("mirror", "proxy"), "not a proxy URL such as http://proxy.lab:3128/")
    return found


def _user_problems(users: list[dict[str, Any]], recipe_file: Path) -> Found:
    found: Found = []
    check = _checker(found)
    seen_users: set[str] = set()
    for i, user in enumerate(users):
        base = ("users", i)
        check((*base, "name"), v.user_name(user["name"]))
        if user["name"] in seen_users:
            check((*base, "name"), f"user {user['name']!r} is listed twice")
        seen_users.add(user["name"])
        check((*base, "full_name"), v.full_name(user["full_name"]) if user["full_name"] else None)
        found += _password_problems(user, base)
        for k, key in enumerate(user["ssh_keys"]):
            check((*base, "ssh_keys", k), v.ssh_public_key(key))
        for k, name in enumerate(user["ssh_key_files"]):
            path = (recipe_file.parent / Path(name).expanduser())
            if not path.exists():
                check((*base, "ssh_key_files", k), f"file not found: {path}")
                continue
            lines, unusable = v.key_file_lines(path)
            check((*base, "ssh_key_files", k), unusable and f"{path}: {unusable}")
            bad = next((f"{path}: key {n}: {why}" for n, line in enumerate(lines, 1)
                        if (why := v.ssh_public_key(line))), None)
            check((*base, "ssh_key_files", k), bad)  # the first bad line only: never a file's worth of errors
    return found


def _root_problems(root: dict[str, Any]) -> Found:
    found = _password_problems(root, ("root",))
    if root["login"] and not (root.get("password_hash") or root.get("password_env")):
        found.append((("root", "login"), "root login needs root.password_hash or root.password_env"))
    return found


def _software_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    check = _checker(found)
    release = data["release"]
    known_tasks = tasks_for(release)
    for i, task in enumerate(data["tasks"]):
        if task not in known_tasks:
            close = difflib.get_close_matches(task, list(known_tasks), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            check(("tasks", i), f"no task {task!r} in Debian {release}{hint} (tasks: {', '.join(sorted(known_tasks))})")
    for i, pkg in enumerate(data["packages"]):
        if not v.PACKAGE.match(pkg):
            check(("packages", i), f"{pkg!r} is not a Debian package name")
    return found


def _desktop_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    user = data["desktop"]["autologin"]
    if user is None:
        return found
    where = ("desktop", "autologin")
    names = [u["name"] for u in data["users"]]
    tasks = data["tasks"]
    if user not in names:
        close = difflib.get_close_matches(user, names, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        found.append((where, f"no user {user!r} in users{hint} (users: {', '.join(names)})"))
    if not DESKTOP_TASKS.intersection(tasks):
        found.append((where, "autologin needs a desktop task (e.g. lxde-desktop) in tasks"))
    elif not SESSIONS.keys() & set(tasks) or display_manager(tasks) != "lightdm":
        found.append((where, f"autologin is supported for {', '.join(sorted(SESSIONS))} (lightdm), whose session "
                             f"the desktop check can prove; tasks have {', '.join(sorted(DESKTOP_TASKS & set(tasks)))}"))
    return found


def _hardware_problems(data: dict[str, Any]) -> Found:
    found: Found = []
    check = _checker(found)
    try:
        disk = parse_size(data["disk"]["size"], bare_unit="G")
        if disk < MIN_DISK:
            check(("disk", "size"), "the disk must be at least 2G")
        elif disk > MAX_DISK:
            check(("disk", "size"), f"the disk must be at most {format_size(MAX_DISK)}")
    except ValueError as exc:
        check(("disk", "size"), str(exc))
    try:
        memory = parse_size(data["vm"]["memory"], bare_unit="M")
        if memory < MIN_MEMORY:
            check(("vm", "memory"), "memory must be at least 512M")
        elif memory > MAX_MEMORY:
            check(("vm", "memory"), f"memory must be at most {format_size(MAX_MEMORY)} (Proxmox VE's limit)")
    except ValueError as exc:
        check(("vm", "memory"), str(exc))
    if not v.CPU.match(data["vm"]["cpu"]):
        check(("vm", "cpu"), f"{data['vm']['cpu']!r} is not a CPU model name such as kvm64 or host")
    return found


def _install_problems(data: dict[str, Any], recipe_file: Path) -> Found:
    found: Found = []
    check = _checker(found)
    base_iso = data["install"]["base_iso"]
    if base_iso and not base_iso.startswith(("http://", "https://")):
        iso_path = recipe_file.parent / Path(base_iso).expanduser()
        if not iso_path.is_file():
            check(("install", "base_iso"), f"file not found: {iso_path}")

    for i, cmd in enumerate(data["late_commands"]):
        if not cmd.strip():
            check(("late_commands", i), "empty command")
    return found


def _password_problems(account: dict[str, Any], base: FieldPath) -> list[tuple[FieldPath, str]]:
    found = []
    if account.get("password_hash") is not None:
        bad = v.crypt_hash(account["password_hash"])
        if bad:
            found.append(((*base, "password_hash"), bad))
        if account.get("password_env") is not None:
            found.append(((*base, "password_env"), "give password_hash or password_env, not both"))
    if account.get("password_env") is not None and not v.ENV_NAME.match(account["password_env"]):
        found.append(((*base, "password_env"), f"{account['password_env']!r} is not an environment variable name"))
    return found


def _network_problems(net: dict[str, Any]) -> list[tuple[FieldPath, str]]:
    found: list[tuple[FieldPath, str]] = []
    mode = net["mode"]
    has_address = net.get("address") is not None
    if mode == "static":
        for field in ("address", "gateway"):
            if net.get(field) is None:
                found.append((("network", field), "required when network.mode is static"))
    if mode == "dhcp":
        for field in ("address", "gateway"):
            if net.get(field) is not None:
                found.append((("network", field), "only used with mode static or nat; remove it or set mode: static"))
    if mode == "nat" and has_address and net.get("gateway") is None:
        found.append((("network", "gateway"), "required when a nat address is given (the NAT bridge's address)"))
    iface = None
    if has_address:
        bad = v.interface_cidr(net["address"])
        if bad:
            found.append((("network", "address"), bad))
        else:
            iface = ipaddress.ip_interface(net["address"])
    if net.get("gateway") is not None:
        bad = v.ip_addr(net["gateway"])
        if bad:
            found.append((("network", "gateway"), bad))
        elif iface is not None:
            gw = ipaddress.ip_address(net["gateway"])
            if gw not in iface.network:
                found.append((("network", "gateway"), f"{gw} is outside the subnet {iface.network} of network.address"))
            elif gw == iface.ip:
                found.append((("network", "gateway"), "the gateway cannot be the guest's own address"))
    for i, ns in enumerate(net["nameservers"]):
        bad = v.ip_addr(ns)
        if bad:
            found.append((("network", "nameservers", i), bad))
    for i, dom in enumerate(net["search"]):
        bad = v.domain(dom)
        if bad:
            found.append((("network", "search", i), bad))
    if not v.BRIDGE.match(net["bridge"]):
        found.append((("network", "bridge"), f"{net['bridge']!r} is not a bridge name such as vmbr0"))
    if net.get("mac") is not None:
        bad = v.mac(net["mac"])
        if bad:
            found.append((("network", "mac"), bad))
    return found


def _verify_problems(checks: list[dict[str, Any]], tasks: list[str]) -> list[tuple[FieldPath, str]]:
    found: list[tuple[FieldPath, str]] = []
    allowed = {"ssh": {"timeout"}, "http": {"port", "path", "expect", "status", "timeout"},
               "service": {"name", "timeout"}, "desktop": {"timeout"}}
    for i, item in enumerate(checks):
        kind = item["check"]
        for key in sorted(set(item) - {"check"} - allowed[kind]):
            found.append((("verify", i, key), f"not used by a {kind} check (its fields: {', '.join(sorted(allowed[kind])) })"))
        if kind == "http" and "path" in item and not v.URL_PATH.match(item["path"]):
            found.append((("verify", i, "path"), f"{item['path']!r} is not a URL path starting with /"))
        if kind == "service":
            if "name" not in item:
                found.append((("verify", i, "name"), "a service check needs the unit name"))
            elif not v.UNIT_NAME.match(item["name"]):
                found.append((("verify", i, "name"), f"{item['name']!r} is not a systemd unit name"))
        if kind == "desktop" and not DESKTOP_TASKS.intersection(tasks):
            found.append((("verify", i, "check"), "a desktop check needs a desktop task (e.g. lxde-desktop) in tasks"))
    return found
