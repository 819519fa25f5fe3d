"""The Proxmox VE target's settings, declared once.

Each ``Setting`` names its key in the targets file, its environment variable, its default, its help
and how its value is checked. The environment reader, the targets-file reader (every problem at once,
as ``FILE:LINE: targets.NAME.KEY: message``) and the documentation table (README and
docs/pve-target.md, ``python -m builder.targets.pve.settings``; a test keeps both current) are all
generated from ``SETTINGS``: adding a setting is one entry here and one field of ``PveConfig``.
"""

from __future__ import annotations

import re
import stat
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from builder.errors import InvalidInput
from builder.recipe.problems import Problem
from builder.recipe.yamlmarks import MarkedDoc, load_marked

TOKEN_ID = re.compile(r"^(?P<user>[^\s@!:]+@[^\s@!:]+)!(?P<name>[A-Za-z][A-Za-z0-9._-]*)$")
STORAGE_ID = re.compile(r"^[a-z][a-z0-9\-_.]*[a-z0-9]$", re.I)
NODE_NAME = re.compile(r"^[a-zA-Z0-9]([a-zA-Z0-9\-]*[a-zA-Z0-9])?$")
SDN_ID = re.compile(r"^[a-zA-Z][a-zA-Z0-9]*[a-zA-Z0-9]$")  # pve-network pve-sdn-zone-id: 2-8 characters
ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
DEFAULT_TASK_TIMEOUT = 900.0
DEFAULT_AGENT_TIMEOUT = 900.0


# --- the configuration a target is opened with -------------------------------------------------


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
    node: str | None = None  # pinned node; None: chosen per VM (free memory, then CPU)
    iso_storage: str = "local"
    disk_storage: str = "local-lvm"
    import_storage: str | None = None
    ca_file: Path | None = None
    fingerprint: str | None = None  # normalised: upper-case hex pairs separated by colons
    jump_host: JumpHostConfig | None = None
    task_timeout: float = DEFAULT_TASK_TIMEOUT
    agent_timeout: float = DEFAULT_AGENT_TIMEOUT
    sdn_zone: str = "imgbuild"
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

    def setting_name(self, key: str) -> str:
        """How the user wrote setting *key*: its environment variable or its targets-file key."""
        if self.source == "environment":
            return next((s.env for s in SETTINGS if s.key == key and s.env), key)
        return key


# --- checking one value ------------------------------------------------------------------------


@dataclass
class Context:
    """What a check may need: where relative paths start, the environment (for token_secret_env)."""

    base: Path
    environ: Mapping[str, str]


def normalize_url(value: str) -> str:
    parts = urlsplit(value.strip())
    if parts.scheme != "https":
        raise ValueError(f"{value!r} must be an https:// URL (Proxmox VE's API is HTTPS only)")
    if not parts.hostname:
        raise ValueError(f"{value!r} has no host name")
    try:
        port = parts.port or 8006
    except ValueError:
        raise ValueError(f"{value!r} has an invalid port") from None
    if parts.query or parts.fragment or parts.username:
        raise ValueError(f"{value!r}: only scheme, host, port and an optional path prefix are allowed")
    path = parts.path.rstrip("/")
    if path.endswith("/api2/json"):
        path = path[: -len("/api2/json")]
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


def read_secret_file(path: Path) -> str:
    try:
        st = path.stat()
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror}") from None
    if st.st_mode & (stat.S_IROTH | stat.S_IWOTH):
        raise ValueError(f"{path} is readable or writable by everyone (mode {stat.S_IMODE(st.st_mode):04o}); "
                         f"refusing to use it: chmod 600 {path}")
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None
    if not secret or "\n" in secret:
        raise ValueError(f"{path} must hold the token secret on one line")
    return secret


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("expected a non-empty string")
    return value.strip()


def _matching(pattern: re.Pattern[str], what: str) -> Callable[[Any, Context], str]:
    def check(value: Any, ctx: Context) -> str:
        text = _text(value)
        if not pattern.match(text):
            raise ValueError(f"{text!r} is not {what}")
        return text
    return check


def _token_id(value: Any, ctx: Context) -> str:
    text = _text(value)
    if not TOKEN_ID.match(text):
        raise ValueError(f"{text!r} must look like user@realm!tokenname (e.g. imgbuild@pve!build)")
    return text


def _path(must_exist: bool = True) -> Callable[[Any, Context], Path]:
    def check(value: Any, ctx: Context) -> Path:
        p = Path(_text(value)).expanduser()
        p = p if p.is_absolute() else ctx.base / p
        if must_exist and not p.is_file():
            raise ValueError(f"{p} does not exist")
        return p
    return check


def _fingerprint(value: Any, ctx: Context) -> str:
    fp = normalize_fingerprint(_text(value))
    if fp is None:
        raise ValueError("must be the SHA-256 fingerprint of the node certificate (32 hex byte pairs, e.g. AB:CD:...; "
                         "see the node's Certificates panel)")
    return fp


def _seconds(value: Any, ctx: Context) -> float:
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ValueError("must be a positive number of seconds") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise ValueError("must be a positive number of seconds")
    return float(value)


def _secret(value: Any, ctx: Context) -> str:
    return _text(value)


def _secret_env(value: Any, ctx: Context) -> str:
    name = _text(value)
    if not ENV_NAME.match(name):
        raise ValueError(f"{name!r} is not an environment variable name")
    if not ctx.environ.get(name, "").strip():
        raise ValueError(f"environment variable {name} is not set")
    return ctx.environ[name].strip()


def _secret_file(value: Any, ctx: Context) -> str:
    return read_secret_file(_path(must_exist=False)(value, ctx))


def _jump(value: Any, ctx: Context) -> dict[str, Any]:
    """``[user@]host[:port]``, or (targets file) a mapping of host, port and user."""
    if isinstance(value, str):
        user, spec_host, spec_port = parse_jump_spec(value.strip())
        return {"host": spec_host, "port": spec_port or 22, "user": user or "root"}
    if not isinstance(value, dict):
        raise ValueError("expected [user@]host[:port] or a mapping (host, port, user, key_file, known_hosts)")
    host = value.get("host")
    if not isinstance(host, str) or not host:
        raise ValueError("host: required (a string)")
    port = value.get("port", 22)
    if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
        raise ValueError("port: must be a TCP port number")
    user = value.get("user", "root")
    if not isinstance(user, str) or not user:
        raise ValueError("user: must be a user name")
    return {"host": host, "port": port, "user": user}


# --- the table -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting:
    key: str  # key in the targets file (``jump_host.known_hosts``: nested under jump_host)
    env: str | None  # environment variable; None: targets file only
    parse: Callable[[Any, Context], Any]
    help: str
    default: Any = None
    default_text: str = ""  # how the default reads in the docs ("" -> the default's value, or "-")
    required: bool = False
    in_file: bool = True  # False: environment only (the secret itself never goes in a file)
    field: str = ""  # PveConfig field it fills ("" -> key)

    @property
    def target_field(self) -> str:
        return self.field or self.key


SETTINGS: tuple[Setting, ...] = (
    Setting("url", "PROXMOX_URL", lambda v, c: normalize_url(_text(v)), required=True,
            help="the API's address, `https://HOST[:PORT]` (port 8006 unless given)"),
    Setting("token_id", "PROXMOX_TOKEN_ID", _token_id, required=True,
            help="the API token, `user@realm!name`"),
    Setting("token_secret", "PROXMOX_TOKEN_SECRET", _secret, in_file=False,
            help="the token's secret (environment only: it never goes in the targets file)"),
    Setting("token_secret_env", None, _secret_env, field="token_secret",
            help="targets file: the environment variable holding the secret"),
    Setting("token_secret_file", "PROXMOX_TOKEN_SECRET_FILE", _secret_file, field="token_secret",
            help="a file holding the secret (mode 600: refused when others may read it)"),
    Setting("node", "PROXMOX_NODE", _matching(NODE_NAME, "a node name"),
            default_text="chosen per VM",
            help="pin every VM to this node; unset: an online node with the most free memory (then the least "
                 "CPU load) is chosen for each VM"),
    Setting("iso_storage", "PROXMOX_ISO_STORAGE", _matching(STORAGE_ID, "a storage id"), default="local",
            help="storage for seed and installer ISOs (content type `iso`)"),
    Setting("disk_storage", "PROXMOX_DISK_STORAGE", _matching(STORAGE_ID, "a storage id"), default="local-lvm",
            help="storage for VM disks (content type `images`)"),
    Setting("import_storage", "PROXMOX_IMPORT_STORAGE", _matching(STORAGE_ID, "a storage id"),
            default_text="the ISO storage",
            help="storage for golden images (content type `import`, PVE 8.4 or later)"),
    Setting("ca_file", "PROXMOX_CA_FILE", _path(),
            default_text="system CA store",
            help="TLS: trust this CA (e.g. the cluster's `pve-root-ca.pem`)"),
    Setting("fingerprint", "PROXMOX_FINGERPRINT", _fingerprint,
            help="TLS: pin the node certificate's SHA-256 fingerprint instead (`AB:CD:...`)"),
    Setting("jump_host", "PROXMOX_JUMP_HOST", _jump,
            help="reach guests through this SSH host: `[user@]host[:port]` (file: a mapping of `host`, `port`, "
                 "`user`, `key_file`, `known_hosts`)"),
    Setting("jump_host.known_hosts", "PROXMOX_JUMP_KNOWN_HOSTS", _path(),
            help="the jump host's pinned key (required with a jump host; never accepted unseen)"),
    Setting("jump_host.key_file", "PROXMOX_JUMP_KEY", _path(),
            default_text="ssh-agent, ~/.ssh keys", help="private key for the jump host"),
    Setting("task_timeout", "PROXMOX_TASK_TIMEOUT", _seconds, default=DEFAULT_TASK_TIMEOUT,
            help="seconds a PVE task (create, clone, import ...) may take"),
    Setting("agent_timeout", "PROXMOX_AGENT_TIMEOUT", _seconds, default=DEFAULT_AGENT_TIMEOUT,
            help="seconds to wait after start for the guest agent to report an address"),
    Setting("sdn_zone", "PROXMOX_SDN_ZONE", _matching(SDN_ID, "an SDN zone id (2-8 letters and digits)"),
            default="imgbuild",
            help="the SDN simple zone imgbuild makes for `network.mode: nat` recipes"),
)
JUMP_FILE_KEYS = {"host", "port", "user", "key_file", "known_hosts"}


# --- readers -------------------------------------------------------------------------------------


class SettingsInvalid(InvalidInput):
    """Every problem of a target's settings at once (exit status 2)."""

    def __init__(self, where: str, problems: list[str]) -> None:
        self.problems = problems
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        super().__init__(f"{where}{problems[0]}{more}", detail="\n".join(problems[1:]))


def _finish(values: dict[str, Any], name: str, source: str, problems: list[str],
            problem: Callable[[str, str], str]) -> PveConfig:
    """Cross-field checks, then the PveConfig. *problem(key, message)* formats one problem."""
    if values.get("fingerprint") and values.get("ca_file"):
        problems.append(problem("fingerprint", "give either the fingerprint or the CA file, not both"))
    jump_parts = {k: values.pop(k) for k in ("jump_host.known_hosts", "jump_host.key_file") if k in values}
    jump = None
    if values.get("jump_host") is not None:
        if "jump_host.known_hosts" not in jump_parts:
            problems.append(problem("jump_host.known_hosts", "required with a jump host: a known_hosts file "
                                                             "holding its key (it is never accepted unseen)"))
        jump = JumpHostConfig(known_hosts=jump_parts.get("jump_host.known_hosts", Path(".")),
                              key_file=jump_parts.get("jump_host.key_file"), **values.pop("jump_host"))
    values.pop("jump_host", None)
    if problems:
        raise SettingsInvalid("" if source != "environment" else "Proxmox VE settings from the environment: ",
                              problems)
    return PveConfig(name=name, source=source, jump_host=jump, **values)


def _defaults() -> dict[str, Any]:
    return {s.target_field: s.default for s in SETTINGS if s.default is not None}


def config_from_env(environ: Mapping[str, str]) -> PveConfig:
    """The target ``pve`` from PROXMOX_* variables."""
    ctx = Context(Path.cwd(), environ)
    values: dict[str, Any] = _defaults()
    problems: list[str] = []
    missing = [s.env for s in SETTINGS if s.required and s.env and not environ.get(s.env, "").strip()]
    if not environ.get("PROXMOX_TOKEN_SECRET", "").strip() and not environ.get("PROXMOX_TOKEN_SECRET_FILE"):
        missing.append("PROXMOX_TOKEN_SECRET")
    if missing:
        raise InvalidInput(f"Proxmox VE target: environment variable(s) not set: {', '.join(m for m in missing if m)}",
                           detail="set PROXMOX_URL, PROXMOX_TOKEN_ID (user@realm!name) and PROXMOX_TOKEN_SECRET (or "
                                  "PROXMOX_TOKEN_SECRET_FILE), or name a target from the targets file with --target NAME")
    for s in SETTINGS:
        raw = environ.get(s.env, "") if s.env else ""
        if not raw.strip():
            continue
        try:
            values[s.target_field] = s.parse(raw, ctx)
        except ValueError as exc:
            problems.append(f"{s.env}: {exc}")
    return _finish(values, "pve", "environment", problems,
                   lambda key, msg: f"{next((s.env for s in SETTINGS if s.key == key and s.env), key)}: {msg}")


def _lookup(entry: dict[str, Any], key: str) -> tuple[bool, Any]:
    head, _, rest = key.partition(".")
    if head not in entry:
        return False, None
    if not rest:
        return True, entry[head]
    sub = entry[head]
    if not isinstance(sub, dict) or rest not in sub:
        return False, None
    return True, sub[rest]


def config_from_file(path: Path, doc: MarkedDoc, name: str, environ: Mapping[str, str]) -> PveConfig:
    """Target *name* of the targets file *doc* (loaded from *path* with line marks)."""
    ctx = Context(path.parent, environ)
    prefix = ("targets", name)
    entry = doc.data["targets"][name]

    def problem(key: str, message: str) -> str:
        fieldpath = (*prefix, *key.split("."))
        loc = doc.where(fieldpath) or (path, 0)
        return Problem(loc[0], loc[1], fieldpath, message).format()

    if not isinstance(entry, dict):
        raise SettingsInvalid("", [problem("", "expected a mapping of settings")])
    values: dict[str, Any] = _defaults()
    problems: list[str] = []
    file_keys = {s.key for s in SETTINGS if s.in_file and "." not in s.key}
    for key in sorted(entry):
        if key == "token_secret":
            problems.append(problem(key, "secrets do not belong in the targets file: use token_secret_env: VAR "
                                         "(an environment variable holding it) or token_secret_file: PATH "
                                         "(a file only you can read)"))
        elif key not in file_keys:
            problems.append(problem(key, f"unknown setting (allowed: {', '.join(sorted(file_keys))})"))
    if isinstance(entry.get("jump_host"), dict):
        for key in sorted(set(entry["jump_host"]) - JUMP_FILE_KEYS):
            problems.append(problem(f"jump_host.{key}", f"unknown setting (allowed: {', '.join(sorted(JUMP_FILE_KEYS))})"))
    secrets = [k for k in ("token_secret_env", "token_secret_file") if k in entry]
    if len(secrets) != 1:
        problems.append(problem("token_secret_env" if not secrets else secrets[1],
                                "give exactly one of token_secret_env (a variable name) or token_secret_file (a file "
                                "holding the secret)"))
    for s in SETTINGS:
        if not s.in_file:
            continue
        present, raw = _lookup(entry, s.key)
        if not present or raw is None:
            if s.required:
                problems.append(problem(s.key, f"required: {s.help}"))
            continue
        try:
            values[s.target_field] = s.parse(raw, ctx)
        except ValueError as exc:
            problems.append(problem(s.key, str(exc)))
    return _finish(values, name, str(path), problems, problem)


def load_targets(path: Path) -> MarkedDoc:
    """The targets file with line marks; problems with its shape raise at once."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise InvalidInput(f"cannot read the targets file {path}: {exc.strerror}") from None
    doc = load_marked(text, path)
    if doc.problems:
        raise SettingsInvalid("", [p.format() for p in doc.problems])
    if not isinstance(doc.data, dict) or not isinstance(doc.data.get("targets"), dict):
        raise SettingsInvalid("", [f"{path}:1: expected a mapping 'targets:' of named targets"])
    unknown = sorted(set(doc.data) - {"targets"})
    if unknown:
        raise SettingsInvalid("", [Problem(path, (doc.where((k,)) or (path, 0))[1], (k,),
                                           "unknown top-level key (only 'targets' is allowed)").format()
                                   for k in unknown])
    return doc


# --- documentation -------------------------------------------------------------------------------


def settings_table() -> str:
    """The Markdown table of every setting (README and docs/pve-target.md)."""
    rows = ["| Targets file | Environment | Default | What it is |", "| --- | --- | --- | --- |"]
    for s in SETTINGS:
        key = f"`{s.key}`" if s.in_file else "(never)"
        env = f"`{s.env}`" if s.env else "-"
        if s.required:
            default = "required"
        elif s.default_text:
            default = s.default_text
        elif s.default is not None:
            default = f"`{s.default:g}`" if isinstance(s.default, float) else f"`{s.default}`"
        else:
            default = "-"
        rows.append(f"| {key} | {env} | {default} | {s.help} |")
    return "\n".join(rows) + "\n"


DOC_HEADER = """\
# The Proxmox VE target

<!-- Generated by `python -m builder.targets.pve.settings > docs/pve-target.md`; do not edit. -->

A Proxmox VE target is configured from the environment (the target called `pve`, the default when
`PROXMOX_URL` is set) or from a targets file (`--target NAME`): `$IMGBUILD_TARGETS`, else
`~/.config/imgbuild/targets.yaml`. Every problem in a targets file is reported at once as
`FILE:LINE: targets.NAME.KEY: message` (exit status 2). Relative paths are relative to the targets file.

## Settings

"""

DOC_EXAMPLE = """
## A targets file

```yaml
targets:
  lab:
    url: https://pve1.lab.internal:8006
    token_id: imgbuild@pve!build
    token_secret_env: PVE_LAB_SECRET        # or token_secret_file: lab.secret (mode 600)
    fingerprint: "AB:CD:...:EF"             # or ca_file: pve-root-ca.pem
    # node: pve2                            # pin; by default each VM goes to the node with most free memory
    iso_storage: local
    disk_storage: local-lvm
    import_storage: shared                  # a shared storage takes one upload for the whole cluster
    jump_host:                              # reach guests on NAT networks through a node
      host: pve1.lab.internal
      user: root
      known_hosts: lab_known_hosts
```
"""


def doc_markdown() -> str:
    from builder.targets.pve.privileges import privileges_markdown

    return DOC_HEADER + settings_table() + DOC_EXAMPLE + "\n" + privileges_markdown()


if __name__ == "__main__":
    print(doc_markdown(), end="")
