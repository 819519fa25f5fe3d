"""Open a Proxmox VE target by name: configuration, TLS policy, API client, jump host, early checks."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

from builder.targets.pve.client import PveClient
from builder.targets.pve.config import PveConfig, load_config
from builder.targets.pve.jump import JumpHost
from builder.targets.pve.target import PveTarget

log = logging.getLogger(__name__)


def open_pve_target(name: str, out_root: Path, *, insecure: bool = False,
                    environ: Mapping[str, str] | None = None, check: bool = True) -> PveTarget:
    """The PVE target *name* (``pve``: from PROXMOX_* variables when PROXMOX_URL is set; otherwise an entry of
    the targets file). With *check*, the API is asked for its version and the node is looked up, so a wrong
    URL, certificate or token fails here with a clear message. *out_root* is unused (PVE keeps VM state)."""
    config = load_config(name, os.environ if environ is None else environ)
    return target_from_config(config, insecure=insecure, check=check)


def target_from_config(config: PveConfig, *, insecure: bool = False, check: bool = True) -> PveTarget:
    if insecure:
        log.warning("TLS certificate of %s is NOT verified (--insecure): anyone on the path can read the API "
                    "token and change what imgbuild does; pin the certificate (fingerprint) instead", config.url)
    client = PveClient(config, insecure=insecure)
    jump = JumpHost(config.jump_host) if config.jump_host else None
    target = PveTarget(client, jump=jump)
    if check:
        target.check_connection()
    return target
