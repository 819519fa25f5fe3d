"""A Proxmox VE 9.1 / 8.4 node (or cluster) simulator for tests (see README.md in this directory).

    from tests.pvesim import PveSimulator, FakeBackend, QemuBackend
"""

from tests.pvesim.backends import DiskFile, FakeBackend, VMBackend
from tests.pvesim.simulator import PveSimulator, Rejection

__all__ = ["DiskFile", "FakeBackend", "PveSimulator", "QemuBackend", "Rejection", "VMBackend"]


def __getattr__(name: str):  # QemuBackend imports the local target; load it only when asked
    if name == "QemuBackend":
        from tests.pvesim.qemu_backend import QemuBackend

        return QemuBackend
    raise AttributeError(name)
