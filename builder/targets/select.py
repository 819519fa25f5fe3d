"""Choose the target a command runs on: the local QEMU target unless Proxmox VE is configured or named."""

from __future__ import annotations

import os
from pathlib import Path

from builder.targets.base import Target


def open_target(name: str | None, out_root: Path, *, accel: str = "auto", insecure: bool = False) -> Target:
    """``local`` -> LocalTarget; ``lab`` or ``lab:NAME`` -> LocalTarget with its NICs in a lab (NAME, else
    $IMGBUILD_LAB, else ``lab``); any other name (or PROXMOX_URL in the environment) -> Proxmox VE."""
    if name is None:
        name = "pve" if os.environ.get("PROXMOX_URL") else "local"
    if name == "local" or name == "lab" or name.startswith("lab:"):
        from builder.targets.local import LocalTarget

        if name == "local":
            return LocalTarget(out_root, accel=accel)
        from builder.lab.plan import DEFAULT_LAB, check_lab_name

        lab = name.partition(":")[2] or os.environ.get("IMGBUILD_LAB") or DEFAULT_LAB
        return LocalTarget(out_root, accel=accel, lab=check_lab_name(lab))
    from builder.targets.pve.connect import open_pve_target

    return open_pve_target(name, out_root, insecure=insecure)


def add_target_options(parser) -> None:
    from builder.targets.local.accel import ACCEL_CHOICES

    parser.add_argument("--target", metavar="NAME", default=None,
                        help="where the VM runs: 'local' (QEMU on this machine; the default unless PROXMOX_URL is "
                             "set), 'lab' (QEMU here with its NICs in the bridges of `imgbuild lab`; 'lab:NAME' for "
                             "lab NAME, default $IMGBUILD_LAB or 'lab') or a Proxmox VE target from the environment "
                             "or the targets file")
    parser.add_argument("--accel", choices=ACCEL_CHOICES, default="auto",
                        help="local target: QEMU acceleration (auto: KVM when it works here, else TCG; TCG is "
                             "single-threaded on QEMU before 8.1, whose multi-threaded TCG crashes guests now and "
                             "then; tcg-multi: multi-threaded anyway, faster)")
    parser.add_argument("--insecure", action="store_true",
                        help="Proxmox VE: do not verify the TLS certificate (prints a warning; avoid)")
