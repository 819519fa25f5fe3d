"""Which Proxmox VE target a name means: the environment (``pve``) or an entry of the targets file.

The settings themselves, their checks and their documentation are declared once in settings.py.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from builder.errors import InvalidInput
from builder.targets.pve.settings import (
    JumpHostConfig,
    PveConfig,
    config_from_env,
    config_from_file,
    load_targets,
    normalize_fingerprint,
    parse_jump_spec,
)

__all__ = ["JumpHostConfig", "PveConfig", "load_config", "normalize_fingerprint", "parse_jump_spec",
           "targets_file_path"]


def targets_file_path(environ: Mapping[str, str]) -> tuple[Path, bool]:
    """(path, explicit): $IMGBUILD_TARGETS, else the XDG config location."""
    explicit = environ.get("IMGBUILD_TARGETS")
    if explicit:
        return Path(explicit).expanduser(), True
    base = environ.get("XDG_CONFIG_HOME") or str(Path(environ.get("HOME") or Path.home()) / ".config")
    return Path(base) / "imgbuild" / "targets.yaml", False


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
                               detail="set PROXMOX_URL, PROXMOX_TOKEN_ID and PROXMOX_TOKEN_SECRET, "
                                      "or define the target in the targets file; or use --target local")
        raise InvalidInput(f"no Proxmox VE target named {name!r}: there is no targets file {path}",
                           detail=f"define it under 'targets: {name}:' in {path} (or point IMGBUILD_TARGETS at "
                                  "your targets file); or use --target local")
    doc = load_targets(path)
    targets = doc.data["targets"]
    if name not in targets:
        known = ", ".join(sorted(map(str, targets))) or "none"
        raise InvalidInput(f"no target named {name!r} in {path} (defined: {known}; plus 'local')")
    return config_from_file(path, doc, name, env)
