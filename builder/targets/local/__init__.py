"""The local target: VMs in qemu-system-x86_64 on this machine (see target.py)."""

from builder.targets.local.accel import AccelVerdict, choose_accel, probe_kvm
from builder.targets.local.target import LocalTarget, LocalVM, derive_mac

__all__ = ["AccelVerdict", "LocalTarget", "LocalVM", "choose_accel", "derive_mac", "probe_kvm"]
