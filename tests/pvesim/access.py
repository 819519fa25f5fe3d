"""Users, API tokens, roles and ACLs, and the permission checks, as pve-access-control does them.

Ports (pve-access-control, 9.1 = master, 8.4 = stable-bookworm):

- the privileges and built-in roles: ``$privgroups`` and ``create_roles`` in src/PVE/AccessControl.pm
  (PVE 9 dropped ``VM.Monitor`` and added ``VM.GuestAgent.*`` and ``VM.Replicate``);
- which roles apply on a path: ``roles`` in src/PVE/AccessControl.pm (the deepest ACL entry wins; an
  entry applies below its path only when it propagates; a token's own entries, then the user's, then
  the user's groups');
- a user's or token's privileges on a path: ``permissions`` in src/PVE/RPCEnvironment.pm (root@pam has
  all; a token without privilege separation has its user's; a privilege-separated token has the
  intersection of its own and its user's);
- the API's declared checks (``permissions => {check => [...]}`` in the schema): ``exec_api2_perm_check``
  and ``check_api2_permissions``; a refusal is pve-common's ``raise_perm_exc``: HTTP 403
  "Permission check failed (PATH, PRIV)";
- ``GET /access/permissions``: ``get_effective_permissions`` (no pools are simulated).
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass, field
from typing import Any

from tests.pvesim.errors import ApiError

# src/PVE/AccessControl.pm $privgroups: category -> (root, admin, user, audit)
_COMMON: dict[str, tuple[list[str], list[str], list[str], list[str]]] = {
    "Sys": (["Sys.PowerMgmt", "Sys.Modify", "Sys.Incoming", "Sys.AccessNetwork"], ["Sys.Console", "Sys.Syslog"], [],
            ["Sys.Audit"]),
    "Datastore": ([], ["Datastore.Allocate", "Datastore.AllocateTemplate"], ["Datastore.AllocateSpace"],
                  ["Datastore.Audit"]),
    "SDN": ([], ["SDN.Allocate", "SDN.Audit"], ["SDN.Use"], ["SDN.Audit"]),
    "User": (["Realm.Allocate"], ["User.Modify", "Group.Allocate", "Realm.AllocateUser"], [], []),
    "Pool": ([], ["Pool.Allocate"], ["Pool.Audit"], ["Pool.Audit"]),
    "Mapping": ([], ["Mapping.Modify"], ["Mapping.Use"], ["Mapping.Audit"]),
}
_VM = {
    "8.4": ([], ["VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
                 "VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.Migrate", "VM.Monitor", "VM.Snapshot",
                 "VM.Snapshot.Rollback"],
            ["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.PowerMgmt"],
            ["VM.Audit"]),
    "9.1": ([], ["VM.Config.Disk", "VM.Config.CPU", "VM.Config.Memory", "VM.Config.Network", "VM.Config.HWType",
                 "VM.Config.Options", "VM.Allocate", "VM.Clone", "VM.GuestAgent.Unrestricted", "VM.Migrate",
                 "VM.Replicate", "VM.Snapshot", "VM.Snapshot.Rollback"],
            ["VM.Config.CDROM", "VM.Config.Cloudinit", "VM.Console", "VM.Backup", "VM.GuestAgent.FileRead",
             "VM.GuestAgent.FileSystemMgmt", "VM.GuestAgent.FileWrite", "VM.PowerMgmt"],
            ["VM.Audit", "VM.GuestAgent.Audit"]),
}


def builtin_roles(version: str) -> tuple[set[str], dict[str, set[str]]]:
    """(valid privileges, built-in roles) of *version*: ``create_roles`` in src/PVE/AccessControl.pm."""
    groups = {"VM": _VM[version], **_COMMON}
    valid = {"Permissions.Modify"}
    roles: dict[str, set[str]] = {"NoAccess": set(), "Administrator": set()}
    for cat, (root, admin, user, audit) in groups.items():
        valid.update(root + admin + user + audit)
        for priv in admin + user + audit:
            roles.setdefault(f"PVE{cat}Admin", set()).add(priv)
            roles.setdefault("PVEAdmin", set()).add(priv)
        if user:
            for priv in user + audit:
                roles.setdefault(f"PVE{cat}User", set()).add(priv)
        for priv in audit:
            roles.setdefault("PVEAuditor", set()).add(priv)
    roles["PVEAdmin"].discard("Mapping.Modify")
    roles["PVETemplateUser"] = {"VM.Clone", "VM.Audit"}
    roles["Administrator"] = set(valid)  # $special_roles->{Administrator} is $valid_privs itself
    return valid, roles


def perm_error(what: str = "") -> ApiError:
    """pve-common src/PVE/Exception.pm raise_perm_exc."""
    return ApiError(403, f"Permission check failed ({what})" if what else "Permission check failed")


def normalize_path(path: str) -> str | None:
    """src/PVE/AccessControl.pm normalize_path."""
    path = re.sub(r"/+", "/", path).rstrip("/") or "/"
    if not path.startswith("/"):
        path = "/" + path
    return path if re.fullmatch(r"[A-Za-z0-9.\-_/]+", path) else None


@dataclass
class Token:
    user: str  # owner, user@realm
    tokenid: str
    secret: str = field(repr=False)
    privsep: bool = True  # PVE's default for new tokens

    @property
    def full_id(self) -> str:
        return f"{self.user}!{self.tokenid}"


@dataclass
class Acl:
    path: str
    ugid: str  # user@realm, user@realm!token, or a group name
    role: str
    propagate: bool = True


class Access:
    """The cluster's user.cfg: users, groups, tokens, custom roles and the ACL tree."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.valid_privs, self.roles = builtin_roles(version)
        self.users: set[str] = {"root@pam"}
        self.groups: dict[str, set[str]] = {}
        self.tokens: dict[str, Token] = {}
        self.acl: list[Acl] = []

    # --- administration (what pveum does) --------------------------------------------------------
    def add_token(self, full_id: str, secret: str, *, privsep: bool = True) -> Token:
        user, _, tokenid = full_id.partition("!")
        self.users.add(user)
        token = Token(user, tokenid, secret, privsep)
        self.tokens[token.full_id] = token
        return token

    def add_role(self, name: str, privs: list[str] | set[str]) -> None:
        """``pveum role add NAME --privs ...``: refuses a privilege this version does not have."""
        for priv in privs:
            if priv not in self.valid_privs:
                raise ValueError(f"invalid privilege '{priv}'")
        self.roles[name] = set(privs)

    def grant(self, path: str, ugid: str, role: str, *, propagate: bool = True) -> None:
        """``pveum acl modify PATH --roles ROLE --users|--tokens|--groups UGID [--propagate 0]``."""
        if role not in self.roles:
            raise ValueError(f"role '{role}' does not exist")
        norm = normalize_path(path)
        if norm is None:
            raise ValueError(f"invalid ACL path '{path}'")
        self.acl = [a for a in self.acl if not (a.path == norm and a.ugid == ugid and a.role == role)]
        self.acl.append(Acl(norm, ugid, role, propagate))

    def authenticate(self, user: str, tokenid: str, secret: str) -> str | None:
        token = self.tokens.get(f"{user}!{tokenid}")
        if token is None or not hmac.compare_digest(secret.encode(), token.secret.encode()):
            return None
        return token.full_id

    # --- evaluation ------------------------------------------------------------------------------
    def roles_on(self, ugid: str, path: str) -> dict[str, bool]:
        """``PVE::AccessControl::roles`` for a user or a token (the token's own ACL entries only)."""
        if ugid == "root@pam":
            return {"Administrator": True}
        roles: dict[str, bool] = {}
        is_token = "!" in ugid
        parts = [""] if path == "/" else path.split("/")
        current = ""
        for i, part in enumerate(parts):
            current = "/" if i == 0 else (current.rstrip("/") + "/" + part)
            final = i == len(parts) - 1
            here = [a for a in self.acl if a.path == current]
            # a token's own entries; a user's own entries, else those of its groups (tokens are in no group)
            tiers = [[a for a in here if a.ugid == ugid]]
            if not is_token:
                tiers.append([a for a in here if "@" not in a.ugid and ugid in self.groups.get(a.ugid, set())])
            for tier in tiers:
                new = {a.role: a.propagate for a in tier if final or a.propagate}
                if new:
                    roles = new  # overwrite what the levels above gave
                    break
        if "NoAccess" in roles:
            return {"NoAccess": roles["NoAccess"]}
        return roles

    def _privs_of(self, ugid: str, path: str) -> dict[str, bool]:
        privs: dict[str, bool] = {}
        for role, propagate in self.roles_on(ugid, path).items():
            for priv in self.roles.get(role, set()):
                privs[priv] = privs.get(priv, False) or propagate
        return privs

    def permissions(self, userid: str, path: str) -> dict[str, bool]:
        """``PVE::RPCEnvironment::permissions``: privilege -> propagate flag."""
        if userid == "root@pam":
            return {p: True for p in self.roles["Administrator"]}
        if "!" in userid:
            token = self.tokens.get(userid)
            if token is None:
                return {}
            user_privs = self.permissions(token.user, path)
            if not token.privsep:
                return user_privs
            own = self._privs_of(userid, path)
            return {p: user_privs[p] and prop for p, prop in own.items() if p in user_privs}
        if userid not in self.users:
            return {}
        return self._privs_of(userid, path)

    def has(self, userid: str, path: str, privs: list[str], *, any_of: bool = False) -> bool:
        perm = self.permissions(userid, path)
        return any(p in perm for p in privs) if any_of else all(p in perm for p in privs)

    def check(self, userid: str, path: str, privs: list[str], *, any_of: bool = False) -> None:
        """``check`` / ``check_any`` of src/PVE/RPCEnvironment.pm."""
        if any_of:
            if not self.has(userid, path, privs, any_of=True):
                raise perm_error(f"{path}, {'|'.join(privs)}")
            return
        perm = self.permissions(userid, path)
        for priv in privs:
            if priv not in perm:
                raise perm_error(f"{path}, {priv}")

    def check_api(self, perms: dict[str, Any] | None, userid: str, params: dict[str, Any]) -> None:
        """``check_api2_permissions``: the check an API method declares, before its code runs."""
        if userid == "root@pam":
            return
        if not perms:
            raise perm_error("user != root@pam")
        if perms.get("user") == "all":
            return
        if perms.get("check"):
            self._exec(perms["check"], userid, params, noerr=False)
            return
        raise perm_error()

    def _exec(self, check: list[Any], userid: str, params: dict[str, Any], *, noerr: bool) -> bool:
        test = check[0]
        if test == "and":
            for sub in check[1:]:
                self._exec(sub, userid, params, noerr=False)
            return True
        if test == "or":
            for sub in check[1:]:
                if self._exec(sub, userid, params, noerr=True):
                    return True
            if noerr:
                return False
            raise perm_error()
        if test == "perm":
            template, privs = check[1], check[2]
            options = dict(zip(check[3::2], check[4::2], strict=False))
            required = options.get("require_param")
            if required and params.get(required) is None:
                if noerr:
                    return False
                raise perm_error()
            path = re.sub(r"\{(\w+)\}", lambda m: str(params.get(m.group(1), "")), template)
            norm = normalize_path(path) or path
            any_of = bool(options.get("any"))
            if noerr:
                return self.has(userid, norm, privs, any_of=any_of)
            self.check(userid, norm, privs, any_of=any_of)
            return True
        if test == "userid-param" and check[1] == "self":
            if params.get("userid") == userid:
                return True
            if noerr:
                return False
            raise perm_error()
        raise perm_error(f"pvesim: permission test '{test}' is not simulated")

    def effective(self, userid: str) -> dict[str, dict[str, int]]:
        """``get_effective_permissions``: the top-level paths and every ACL path, where anything is granted."""
        paths = {"/", "/access", "/access/groups", "/nodes", "/pool", "/sdn", "/storage", "/vms"}
        paths.update(a.path for a in self.acl)
        out: dict[str, dict[str, int]] = {}
        for path in sorted(paths):
            perm = self.permissions(userid, path)
            if perm:
                out[path] = {p: int(v) for p, v in sorted(perm.items())}
        return out
