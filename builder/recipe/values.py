"""Validators for single values that reach preseed lines, shell commands or YAML files.

Each returns None when the value is fine, or a message saying what is wrong. They are strict on purpose:
a value that passes can be written into a debconf line or a shell word without further escaping.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import re
import stat
import unicodedata
from pathlib import Path

HOST_LABEL = re.compile(r"^(?!-)[A-Za-z0-9-]{1,63}(?<!-)$")
USER_NAME = re.compile(r"^[a-z_][a-z0-9_-]{0,31}$")
RESERVED_USERS = frozenset(
    ["root", "daemon", "bin", "sys", "sync", "games", "man", "lp", "mail", "news", "uucp", "proxy", "www-data", "backup", "list", "irc", "gnats", "nobody", "systemd-network", "systemd-resolve", "systemd-timesync", "messagebus", "sshd", "_apt", "lightdm", "polkitd"]  # noqa: E501
)
CRYPT_HASH = re.compile(r"^(\$6\$(rounds=\d{4,9}\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86}|\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,86}\$[./A-Za-z0-9]{43})$")  # noqa: E501
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LOCALE = re.compile(r"^[a-z]{2,3}_[A-Z]{2}(\.UTF-8)?(@[a-z]+)?$")
KEYBOARD = re.compile(r"^[a-z]{2,3}(\([a-z0-9_-]+\))?$")
TIMEZONE = re.compile(r"^[A-Za-z][A-Za-z0-9_+-]*(/[A-Za-z0-9_+-]+){0,2}$")
PACKAGE = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
BRIDGE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")
MAC = re.compile(r"^([0-9A-Fa-f]{2}:){5}[0-9A-Fa-f]{2}$")
CPU = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
MIRROR_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
URL_PATH = re.compile(r"^/[A-Za-z0-9._~!$&'()*+,;=:@%/?-]*$")
UNIT_NAME = re.compile(r"^[A-Za-z0-9@_.:\\-]{1,255}$")
PROXY = re.compile(r"^https?://([A-Za-z0-9._~%!$&'()*+,;=-]+(:[A-Za-z0-9._~%!$&'()*+,;=-]*)?@)?[A-Za-z0-9.-]+(:\d{1,5})?/?$")
SSH_KEY_TYPES = (
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521",
    "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
)


def control_chars(text: str, allow: str = "") -> str | None:
    """Message naming the first control or invisible formatting character in *text*, else None."""
    for i, ch in enumerate(text):
        if ch in allow:
            continue
        cat = unicodedata.category(ch)
        if cat in ("Cc", "Cf", "Zl", "Zp", "Cs", "Co", "Cn"):
            return f"contains a control character (U+{ord(ch):04X} at position {i + 1})"
    return None


def ascii_only(text: str) -> str | None:
    for i, ch in enumerate(text):
        if ord(ch) > 126:
            return f"contains a non-ASCII character {ch!r} at position {i + 1}"
    return None


def hostname(value: str) -> str | None:
    if not HOST_LABEL.match(value) or value.isdigit():
        return (f"{value!r} is not a valid host name: use one RFC 1123 label of letters, digits and hyphens "
                "(1-63 characters, not starting or ending with a hyphen)")
    return None


def domain(value: str) -> str | None:
    if len(value) > 253 or not value or not all(HOST_LABEL.match(label) for label in value.split(".")):
        return f"{value!r} is not a valid DNS domain (RFC 1123 labels separated by dots)"
    return None


def mirror_host(value: str) -> str | None:
    host, _, port = value.partition(":")
    if port and (not port.isdigit() or not 0 < int(port) < 65536):
        return f"{value!r}: port must be a number from 1 to 65535"
    try:
        ipaddress.ip_address(host)
        return None
    except ValueError:
        return domain(host) and f"{value!r} is not a valid host name"


def user_name(value: str) -> str | None:
    if not USER_NAME.match(value):
        return f"{value!r} is not a valid user name: lower case letters, digits, _ and -, starting with a letter or _"
    if value in RESERVED_USERS:
        return f"{value!r} is a system account name; choose another"
    return None


def full_name(value: str) -> str | None:
    bad = control_chars(value)
    if bad:
        return bad
    if any(ch in value for ch in ":,=\\\"'`$"):
        return f"{value!r} may not contain : , = \\ quotes, backticks or $"
    return None


def crypt_hash(value: str) -> str | None:
    if not CRYPT_HASH.match(value):
        return "not a SHA-512 crypt ($6$...) or yescrypt ($y$...) hash; generate one with `mkpasswd -m yescrypt`"
    return None


MAX_KEY_FILE = 64 * 1024  # an authorized_keys file is a few lines


def key_file_lines(path: Path) -> tuple[list[str], str | None]:
    """The key lines of an ``ssh_key_files`` entry (comments and blanks dropped), or why it cannot be used.
    Read within MAX_KEY_FILE; the text itself never goes into a message."""
    try:
        with open(path, "rb") as fh:
            if not stat.S_ISREG(os.fstat(fh.fileno()).st_mode):
                return [], "not a regular file"
            raw = fh.read(MAX_KEY_FILE + 1)
    except OSError as exc:
        return [], f"cannot read it: {exc.strerror or exc}"
    if len(raw) > MAX_KEY_FILE:
        return [], f"larger than {MAX_KEY_FILE // 1024} KiB; an SSH public key file is a few lines"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [], "not UTF-8 text"
    return [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")], None


def ssh_public_key(value: str) -> str | None:
    parts = value.strip().split(None, 2)
    if len(parts) < 2 or parts[0] not in SSH_KEY_TYPES:
        return f"not an SSH public key line (expected one of {', '.join(SSH_KEY_TYPES[:3])}, ... then base64)"
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except ValueError:
        return "the key's base64 part does not decode"
    # The blob starts with the key type as an SSH string: uint32 length + name.
    if len(blob) < 4 or blob[4 : 4 + int.from_bytes(blob[:4], "big")] != parts[0].encode():
        return f"the key's data does not match its type {parts[0]}"
    if len(parts) == 3:
        bad = control_chars(parts[2]) or ascii_only(parts[2])
        if bad:
            return f"key comment {bad}"
    return None


def ip_addr(value: str) -> str | None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not an IP address"
    return None


def interface_cidr(value: str) -> str | None:
    try:
        iface = ipaddress.ip_interface(value)
    except ValueError:
        return f"{value!r} is not an address with prefix length, e.g. 192.168.1.250/24"
    if "/" not in value:
        return f"{value!r} needs a prefix length, e.g. {value}/24"
    net = iface.network
    if net.num_addresses > 2 and iface.ip in (net.network_address, net.broadcast_address):
        return f"{value!r} is the network or broadcast address of {net}"
    return None


def mac(value: str) -> str | None:
    if not MAC.match(value):
        return f"{value!r} is not a MAC address (six hex pairs separated by colons)"
    first = int(value[:2], 16)
    if first & 1:
        return f"{value!r} is a multicast address; a NIC needs a unicast MAC (even first octet)"
    if value.replace(":", "") == "0" * 12:
        return "00:00:00:00:00:00 is not a usable MAC"
    return None
