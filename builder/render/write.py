"""Render a recipe into out/NAME/: resolve secrets (keys, password hashes) and write every file atomically.

Files: preseed.cfg, user-data, meta-data, network-config, known_hosts, ssh_host_ed25519_key(.pub),
id_ed25519(.pub) when the recipe gives the first user no SSH key, password-hashes.json when passwords
come from the environment. Secrets are mode 0600 and the directory 0700.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from builder.errors import ImgbuildError
from builder.fsutil import write_atomic
from builder.outdir import recipe_dir
from builder.recipe.model import Recipe
from builder.recipe.problems import Problem, RecipeInvalid
from builder.render.cloudinit import render_meta_data, render_network_config, render_user_data
from builder.render.inputs import HostKey, RenderInputs
from builder.render.preseed import render_preseed
from builder.secrets.keys import ensure_keypair
from builder.secrets.passwords import hash_password, verify_password
from builder.secrets.redact import remember, url_secrets

SEED_FILES = ("user-data", "meta-data", "network-config")
HOST_KEY = "ssh_host_ed25519_key"
ADMIN_KEY = "id_ed25519"
HASHES = "password-hashes.json"


@dataclass(frozen=True)
class Rendered:
    recipe: Recipe
    out_dir: Path
    files: dict[str, Path]
    changed: tuple[str, ...]
    known_hosts: Path
    host_public_key: str
    admin_key: Path | None  # private key imgbuild logs in with; None: the user's own keys/agent
    secrets: tuple[str, ...] = field(default=(), repr=False)  # plain passwords and proxy credentials, redacted


def recipe_out_dir(out_root: Path, recipe: Recipe) -> Path:
    return recipe_dir(out_root, recipe.name)  # a real directory of ours, 0700; never a symlink followed


def resolve_inputs(recipe: Recipe, out_dir: Path,
                   environ: Mapping[str, str]) -> tuple[RenderInputs, Path | None, tuple[str, ...]]:
    host = ensure_keypair(out_dir / HOST_KEY, comment=f"root@{recipe.hostname}")
    admin_key = None
    extra: dict[str, tuple[str, ...]] = {}
    if not recipe.admin.ssh_keys:
        pair = ensure_keypair(out_dir / ADMIN_KEY, comment=f"imgbuild-{recipe.name}")
        admin_key = pair.private_path
        extra[recipe.admin.name] = (pair.public_line,)
    hashes_path = out_dir / HASHES
    stored = _stored_hashes(hashes_path)
    hashes: dict[str, str | None] = {}
    secrets: list[str] = []
    problems: list[Problem] = []
    used: dict[str, str] = {}

    def from_env(account: str, var: str, field_path: tuple) -> str | None:
        value = environ.get(var)
        if not value:
            problems.append(Problem(recipe.source, 0, field_path,
                                    f"environment variable {var} is not set (it should hold the password)"))
            return None
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # os.environ keeps undecodable bytes as surrogates
            problems.append(Problem(recipe.source, 0, field_path,
                                    f"environment variable {var} is not UTF-8 text (passwords are hashed as UTF-8)"))
            return None
        secrets.append(value)
        old = stored.get(account)
        hashed = old if old and verify_password(value, old) else hash_password(value)
        used[account] = hashed
        return hashed

    for i, user in enumerate(recipe.users):
        if user.password_hash:
            hashes[user.name] = user.password_hash
        elif user.password_env:
            hashes[user.name] = from_env(user.name, user.password_env, ("users", i, "password_env"))
        else:
            hashes[user.name] = None
    root_hash = recipe.root.password_hash
    if recipe.root.password_env:
        root_hash = from_env("root", recipe.root.password_env, ("root", "password_env"))
    if problems:
        raise RecipeInvalid(problems)
    if used:
        write_atomic(hashes_path, json.dumps(used, indent=1, sort_keys=True) + "\n", mode=0o600)
    inputs = RenderInputs(
        host_key=HostKey(private_openssh=host.private_openssh, public_line=host.public_line),
        password_hashes=hashes, root_hash=root_hash, extra_keys=extra,
    )
    return inputs, admin_key, tuple(secrets)


def _stored_hashes(path: Path) -> dict[str, str]:
    """password-hashes.json (account -> crypt hash, kept so re-rendering is stable); {} when absent."""
    try:
        data = json.loads(path.read_bytes())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise _corrupt(path, str(exc)) from None
    if not isinstance(data, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in data.items()):
        raise _corrupt(path, "not a JSON object of account names and hashes")
    return data


def _corrupt(path: Path, why: str) -> ImgbuildError:
    return ImgbuildError(f"cannot read {path}: {why}",
                         detail="remove it: the passwords are hashed again on the next render (new salts, so a "
                                "VM built before is then rebuilt)")


def login_material(recipe: Recipe, out_root: Path) -> tuple[Path, Path | None]:
    """known_hosts and the admin private key of an already rendered recipe, without touching them."""
    out_dir = out_root / recipe.name
    known_hosts = out_dir / "known_hosts"
    if not known_hosts.exists():
        raise ImgbuildError(f"{known_hosts} is missing: run imgbuild make {recipe.name} first")
    key = out_dir / ADMIN_KEY
    return known_hosts, (key if key.exists() and not recipe.admin.ssh_keys else None)


def known_hosts_text(recipe: Recipe, public_key: str) -> str:
    names = [recipe.hostname, recipe.fqdn] + ([recipe.network.ip] if recipe.network.ip else [])
    return f"{','.join(names)} {public_key}\n"


def render_recipe(recipe: Recipe, out_root: Path, environ: Mapping[str, str] | None = None) -> Rendered:
    out_dir = recipe_out_dir(out_root, recipe)
    inputs, admin_key, secrets = resolve_inputs(recipe, out_dir, os.environ if environ is None else environ)
    secrets += url_secrets(recipe.mirror.proxy)
    remember(*secrets)  # from here on, no output of this process shows them (builder.secrets.redact)
    user_data = render_user_data(recipe, inputs)
    network = render_network_config(recipe)
    contents = {
        "preseed.cfg": (render_preseed(recipe, inputs), 0o600),
        "user-data": (user_data, 0o600),  # holds the host's private key
        "meta-data": (render_meta_data(recipe, user_data, network), 0o644),
        "network-config": (network, 0o644),
    }
    public_key = " ".join(inputs.host_key.public_line.split()[:2])
    contents["known_hosts"] = (known_hosts_text(recipe, public_key), 0o644)
    changed = []
    files = {}
    for name, (text, mode) in contents.items():
        path = out_dir / name
        if write_atomic(path, text, mode=mode):
            changed.append(name)
        files[name] = path
    return Rendered(recipe=recipe, out_dir=out_dir, files=files, changed=tuple(changed),
                    known_hosts=files["known_hosts"], host_public_key=public_key, admin_key=admin_key,
                    secrets=secrets)
