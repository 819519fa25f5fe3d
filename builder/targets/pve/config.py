"""Where a Proxmox VE target is and how to authenticate: from the environment or a targets file.

Environment (the target called ``pve``, the default when ``PROXMOX_URL`` is set)::

    PROXMOX_URL=https://pve.example:8006   PROXMOX_TOKEN_ID=imgbuild@pve!build
    PROXMOX_TOKEN_SECRET=...               PROXMOX_NODE=pve1
    PROXMOX_ISO_STORAGE=local (default)    PROXMOX_DISK_STORAGE=local-lvm (default)
    optional: PROXMOX_IMPORT_STORAGE (qcow2 golden images; default: the ISO storage),
              PROXMOX_CA_FILE, PROXMOX_FINGERPRINT (SHA-256 of the node certificate),
              PROXMOX_JUMP_HOST=[user@]host[:port], PROXMOX_JUMP_KNOWN_HOSTS (required with a jump host),
              PROXMOX_JUMP_KEY (private key file; default: ssh-agent and ~/.ssh keys)

Targets file (``--target NAME``): ``$IMGBUILD_TARGETS``, else ``$XDG_CONFIG_HOME/imgbuild/targets.yaml``
(``~/.config/imgbuild/targets.yaml``)::

    targets:
      lab:
        url: https://pve.lab.internal:8006
        token_id: imgbuild@pve!build
        token_secret_env: PVE_LAB_SECRET        # or token_secret_file: lab.secret (not world-readable)
        node: pve1
        iso_storage: local
        disk_storage: local-lvm
        import_storage: local                   # optional
        fingerprint: "AB:CD:...:EF"             # optional; or ca_file: pve-root-ca.pem
        task_timeout: 900                       # optional, seconds
        jump_host:                              # optional: reach guests through SSH
          host: pve.lab.internal
          port: 22
          user: root
          key_file: ~/.ssh/id_ed25519           # optional
          known_hosts: lab_known_hosts          # required: the jump host's pinned key

Relative paths are relative to the targets file. The token secret is never written in the file.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from builder.errors import InvalidInput

TOKEN_ID = re.compile(r"^(?P<user>[^\s@!:]+@[^\s@!:]+)!(?P<name>[A-Za-z][A-Za-z0-9._-]*)$")
STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)
NODE_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
FILE_KEYS = {"url", "token_id", "token_secret_env", "token_secret_file", "node", "iso_storage", "disk_storage",
             "import_storage", "ca_file", "fingerprint", "jump_host", "task_timeout"}
JUMP_KEYS = {"host", "port", "user", "key_file", "known_hosts"}
DEFAULT_TASK_TIMEOUT = 900.0


@dataclass(frozen=True)
class JumpHostConfig:
    host: str
    port: int
    user: str
    known_hosts: Path
    key_file: Path | None = None

    def describe(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


@dataclass(frozen=True)
class PveConfig:
    name: str  # the target's name (``pve`` from the environment, or the targets file entry)
    url: str  # https://host:port (no /api2/json)
    token_id: str  # user@realm!tokenname
    token_secret: str = field(repr=False)
    node: str = "pve"
    iso_storage: str = "local"
    disk_storage: str = "local-lvm"
    import_storage: str | None = None
    ca_file: Path | None = None
    fingerprint: str | None = None  # normalised: upper-case hex pairs separated by colons
    jump_host: JumpHostConfig | None = None
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    source: str = "environment"  # where it came from, for messages

    @property
    def user(self) -> str:
        return self.token_id.split("!", 1)[0]

    @property
    def token_name(self) -> str:
        return self.token_id.split("!", 1)[1]

    @property
    def image_storage(self) -> str:
        return self.import_storage or self.iso_storage

    @property
    def host(self) -> str:
        return urlsplit(self.url).hostname or ""

    @property
    def port(self) -> int:
        return urlsplit(self.url).port or 8006


# --- shared validation -------------------------------------------------------------------------


class _Problems:
    def __init__(self, where: str) -> None:
        self.where = where
        self.items: list[str] = []

    def add(self, fieldname: str, message: str) -> None:
        self.items.append(f"{fieldname}: {message}")

    def raise_if_any(self) -> None:
        if self.items:
            first = self.items[0]
            more = f" (and {len(self.items) - 1} more problem(s))" if len(self.items) > 1 else ""
            raise InvalidInput(f"{self.where}: {first}{more}", detail="\n".join(self.items))


def normalize_url(value: str, problems: _Problems, fieldname: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme != "https":
        problems.add(fieldname, f"{value!r} must be an https:// URL (Proxmox VE's API is HTTPS only)")
        return value
    if not parts.hostname:
        problems.add(fieldname, f"{value!r} has no host name")
        return value
    try:
        port = parts.port or 8006
    except ValueError:
        problems.add(fieldname, f"{value!r} has an invalid port")
        return value
    path = parts.path.rstrip("/")
    if path.endswith("/api2/json"):
        path = path[: -len("/api2/json")]
    if parts.query or parts.fragment or parts.username:
        problems.add(fieldname, f"{value!r}: only scheme, host, port and an optional path prefix are allowed")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"https://{host}:{port}{path}"


def normalize_fingerprint(value: str) -> str | None:
    """``AB:CD:...`` (32 bytes of SHA-256), case and separators (':' or none) ignored; None if invalid."""
    text = value.strip()
    if text.lower().startswith("sha256:"):
        text = text[7:]
    hexdigits = text.replace(":", "").replace(" ", "")
    if not re.fullmatch(r"[0-9a-fA-F]{64}", hexdigits):
        return None
    hexdigits = hexdigits.upper()
    return ":".join(hexdigits[i : i + 2] for i in range(0, 64, 2))


def read_secret_file(path: Path, problems: _Problems, fieldname: str) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        problems.add(fieldname, f"cannot read {path}: {exc.strerror}")
        return ""
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        problems.add(fieldname, f"{path} is readable or writable by everyone (mode {stat.S_IMODE(st.st_mode):04o}); "
                                f"refusing to use it: chmod 600 {path}")
        return ""
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        problems.add(fieldname, f"cannot read {path}: {exc}")
        return ""
    if not secret or "\n" in secret:
        problems.add(fieldname, f"{path} must hold the token secret on one line")
        return ""
    return secret


def parse_jump_spec(text: str) -> tuple[str | None, str, int | None]:
    """``[user@]host[:port]`` (IPv6 as ``[addr]:port``) -> (user, host, port)."""
    user = None
    if "@" in text:
        user, text = text.rsplit("@", 1)
    m = re.fullmatch(r"\[(?P<h6>[^\]]+)\](?::(?P<p6>\d+))?|(?P<h>[^:\[\]]+)(?::(?P<p>\d+))?", text)
    if not m:
        raise ValueError(f"{text!r} is not host, host:port or [ipv6]:port")
    host = m.group("h6") or m.group("h")
    port = m.group("p6") or m.group("p")
    return user or None, host, int(port) if port else None


def _check_common(cfg: dict[str, Any], problems: _Problems, names: Mapping[str, str]) -> None:
    """Checks shared by both sources; *names* maps our field names to what the user wrote."""
    if not TOKEN_ID.match(cfg["token_id"]):
        problems.add(names["token_id"], f"{cfg['token_id']!r} must look like user@realm!tokenname "
                                        "(e.g. imgbuild@pve!build)")
    if not NODE_NAME.match(cfg["node"]):
        problems.add(names["node"], f"{cfg['node']!r} is not a node name")
    for key in ("iso_storage", "disk_storage", "import_storage"):
        value = cfg.get(key)
        if value is not None and not STORAGE_ID.match(value):
            problems.add(names[key], f"{value!r} is not a storage id")
    if cfg.get("fingerprint") is not None:
        fp = normalize_fingerprint(str(cfg["fingerprint"]))
        if fp is None:
            problems.add(names["fingerprint"], "must be the SHA-256 fingerprint of the node certificate "
                                               "(32 hex byte pairs, e.g. AB:CD:...; see the node's Certificates panel)")
        cfg["fingerprint"] = fp
    ca = cfg.get("ca_file")
    if ca is not None and not Path(ca).is_file():
        problems.add(names["ca_file"], f"{ca} does not exist")
    if ca is not None and cfg.get("fingerprint"):
        problems.add(names["fingerprint"], f"give either {names['fingerprint']} or {names['ca_file']}, not both")


# --- environment ---------------------------------------------------------------------------------


def config_from_env(environ: Mapping[str, str]) -> PveConfig:
    problems = _Problems("Proxmox VE settings from the environment")
    required = ("PROXMOX_URL", "PROXMOX_TOKEN_ID", "PROXMOX_TOKEN_SECRET", "PROXMOX_NODE")
    missing = [k for k in required if not environ.get(k)]
    if missing:
        raise InvalidInput(f"Proxmox VE target: environment variable(s) not set: {', '.join(missing)}",
                           detail="set PROXMOX_URL, PROXMOX_TOKEN_ID (user@realm!name), PROXMOX_TOKEN_SECRET and "
                                  "PROXMOX_NODE, or name a target from the targets file with --target NAME")
    names = {"url": "PROXMOX_URL", "token_id": "PROXMOX_TOKEN_ID", "node": "PROXMOX_NODE",
             "iso_storage": "PROXMOX_ISO_STORAGE", "disk_storage": "PROXMOX_DISK_STORAGE",
             "import_storage": "PROXMOX_IMPORT_STORAGE", "fingerprint": "PROXMOX_FINGERPRINT",
             "ca_file": "PROXMOX_CA_FILE"}
    cfg: dict[str, Any] = {
        "url": normalize_url(environ["PROXMOX_URL"], problems, "PROXMOX_URL"),
        "token_id": environ["PROXMOX_TOKEN_ID"].strip(),
        "node": environ["PROXMOX_NODE"].strip(),
        "iso_storage": environ.get("PROXMOX_ISO_STORAGE") or "local",
        "disk_storage": environ.get("PROXMOX_DISK_STORAGE") or "local-lvm",
        "import_storage": environ.get("PROXMOX_IMPORT_STORAGE") or None,
        "fingerprint": environ.get("PROXMOX_FINGERPRINT") or None,
        "ca_file": Path(environ["PROXMOX_CA_FILE"]).expanduser() if environ.get("PROXMOX_CA_FILE") else None,
    }
    _check_common(cfg, problems, names)
    jump = None
    if environ.get("PROXMOX_JUMP_HOST"):
        try:
            user, host, port = parse_jump_spec(environ["PROXMOX_JUMP_HOST"])
        except ValueError as exc:
            problems.add("PROXMOX_JUMP_HOST", str(exc))
        else:
            kh = environ.get("PROXMOX_JUMP_KNOWN_HOSTS")
            if not kh:
                problems.add("PROXMOX_JUMP_KNOWN_HOSTS", "required with PROXMOX_JUMP_HOST: a known_hosts file "
                                                         "holding the jump host's key (it is never accepted unseen)")
            elif not Path(kh).expanduser().is_file():
                problems.add("PROXMOX_JUMP_KNOWN_HOSTS", f"{kh} does not exist")
            key = environ.get("PROXMOX_JUMP_KEY")
            if key and not Path(key).expanduser().is_file():
                problems.add("PROXMOX_JUMP_KEY", f"{key} does not exist")
            jump = JumpHostConfig(host=host, port=port or 22, user=user or "root",
                                  known_hosts=Path(kh or ".").expanduser(),
                                  key_file=Path(key).expanduser() if key else None)
    problems.raise_if_any()
    return PveConfig(name="pve", token_secret=environ["PROXMOX_TOKEN_SECRET"].strip(), jump_host=jump,
                     source="environment", **cfg)


# --- targets file ----------------------------------------------------------------------------------


def targets_file_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """(path, explicit): $IMGBUILD_TARGETS, else the XDG config location."""
    explicit = environ.get("IMGBUILD_TARGETS")
    if explicit:
        return Path(explicit).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "imgbuild" / "targets.yaml", False


def load_targets_file(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInput(f"cannot read the targets file {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        raise InvalidInput(f"{path}{where}: not valid YAML: {getattr(exc, 'problem', None) or exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("targets"), dict):
        raise InvalidInput(f"{path}: expected a mapping 'targets:' of named targets")
    unknown = sorted(set(data) - {"targets"})
    if unknown:
        raise InvalidInput(f"{path}: unknown top-level key(s): {', '.join(unknown)} (only 'targets' is allowed)")
    return data["targets"]


def config_from_file(path: Path, name: str, entry: Any, environ: Mapping[str, str]) -> PveConfig:
    where = f"{path}: targets.{name}"
    problems = _Problems(where)
    if not isinstance(entry, dict):
        raise InvalidInput(f"{where}: expected a mapping of settings")
    if "token_secret" in entry:
        raise InvalidInput(f"{where}.token_secret: secrets do not belong in the targets file",
                           detail="use token_secret_env: VAR (an environment variable holding the secret) or "
                                  "token_secret_file: PATH (a file only you can read)")
    for key in sorted(set(entry) - FILE_KEYS):
        problems.add(key, f"unknown setting (allowed: {', '.join(sorted(FILE_KEYS))})")
    for key in ("url", "token_id", "node"):
        if not isinstance(entry.get(key), str) or not entry.get(key):
            problems.add(key, "required (a string)")
    problems.raise_if_any()

    def rel(value: Any, key: str) -> Path | None:
        if value is None:
            return None
        if not isinstance(value, str):
            problems.add(key, "must be a path (string)")
            return None
        p = Path(value).expanduser()
        return p if p.is_absolute() else path.parent / p

    secret = ""
    env_var, secret_file = entry.get("token_secret_env"), entry.get("token_secret_file")
    if bool(env_var) == bool(secret_file):
        problems.add("token_secret_env", "give exactly one of token_secret_env (a variable name) or "
                                         "token_secret_file (a file holding the secret)")
    elif env_var:
        if not isinstance(env_var, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", env_var):
            problems.add("token_secret_env", f"{env_var!r} is not an environment variable name")
        elif not environ.get(env_var):
            problems.add("token_secret_env", f"environment variable {env_var} is not set")
        else:
            secret = environ[env_var].strip()
    else:
        secret_path = rel(secret_file, "token_secret_file")
        if secret_path is not None:
            secret = read_secret_file(secret_path, problems, "token_secret_file")

    names = {k: k for k in FILE_KEYS}
    cfg: dict[str, Any] = {
        "url": normalize_url(str(entry["url"]), problems, "url"),
        "token_id": str(entry["token_id"]).strip(),
        "node": str(entry["node"]).strip(),
        "iso_storage": str(entry.get("iso_storage") or "local"),
        "disk_storage": str(entry.get("disk_storage") or "local-lvm"),
        "import_storage": str(entry["import_storage"]) if entry.get("import_storage") else None,
        "fingerprint": entry.get("fingerprint"),
        "ca_file": rel(entry.get("ca_file"), "ca_file"),
    }
    _check_common(cfg, problems, names)
    timeout = entry.get("task_timeout", DEFAULT_TASK_TIMEOUT)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
        problems.add("task_timeout", "must be a positive number of seconds")
        timeout = DEFAULT_TASK_TIMEOUT
    jump = None
    if entry.get("jump_host") is not None:
        j = entry["jump_host"]
        if not isinstance(j, dict):
            problems.add("jump_host", "expected a mapping (host, port, user, key_file, known_hosts)")
        else:
            for key in sorted(set(j) - JUMP_KEYS):
                problems.add(f"jump_host.{key}", f"unknown setting (allowed: {', '.join(sorted(JUMP_KEYS))})")
            if not isinstance(j.get("host"), str) or not j.get("host"):
                problems.add("jump_host.host", "required (a string)")
            port = j.get("port", 22)
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                problems.add("jump_host.port", "must be a TCP port number")
                port = 22
            known = rel(j.get("known_hosts"), "jump_host.known_hosts")
            if known is None:
                problems.add("jump_host.known_hosts", "required: a known_hosts file holding the jump host's key "
                                                      "(it is never accepted unseen)")
            elif not known.is_file():
                problems.add("jump_host.known_hosts", f"{known} does not exist")
            key_file = rel(j.get("key_file"), "jump_host.key_file")
            if key_file is not None and not key_file.is_file():
                problems.add("jump_host.key_file", f"{key_file} does not exist")
            jump = JumpHostConfig(host=str(j.get("host") or ""), port=port, user=str(j.get("user") or "root"),
                                  known_hosts=known or Path("."), key_file=key_file)
    problems.raise_if_any()
    return PveConfig(name=name, token_secret=secret, jump_host=jump, task_timeout=float(timeout),
                     source=str(path), **cfg)


def load_config(name: str, environ: Mapping[str, str] | None = None) -> PveConfig:
    """The configuration of target *name*: ``pve`` from the environment when PROXMOX_URL is set, else the
    entry *name* of the targets file."""
    env = os.environ if environ is None else environ
    if name == "pve" and env.get("PROXMOX_URL"):
        return config_from_env(env)
    path, explicit = targets_file_path(env)
    if not path.exists():
        if explicit:
            raise InvalidInput(f"targets file {path} (from IMGBUILD_TARGETS) does not exist")
        if name == "pve":
            raise InvalidInput(f"no Proxmox VE target 'pve': PROXMOX_URL is not set and there is no targets file {path}",
                               detail="set PROXMOX_URL, PROXMOX_TOKEN_ID, PROXMOX_TOKEN_SECRET and PROXMOX_NODE, "
                                      "or define the target in the targets file; or use --target local")
        raise InvalidInput(f"no Proxmox VE target named {name!r}: there is no targets file {path}",
                           detail=f"define it under 'targets: {name}:' in {path} (or point IMGBUILD_TARGETS at "
                                  "your targets file); or use --target local")
    targets = load_targets_file(path)
    if name not in targets:
        known = ", ".join(sorted(map(str, targets))) or "none"
        raise InvalidInput(f"no target named {name!r} in {path} (defined: {known}; plus 'local')")
    return config_from_file(path, name, targets[name], env)
