"""Which privileges imgbuild's API calls need, per PVE version, and the pveum commands that grant them.

Pure: a ``Plan`` (what a job will do) -> ``Need``s (ACL path, privileges, why); the privileges a token
has on each path (``GET /access/permissions?path=...``) -> what is missing -> the advice. The rules
follow PVE's source:

- qemu-server src/PVE/API2/Qemu.pm: create_vm wants VM.Allocate on /vms/<vmid>, then per option
  ``$check_vm_modify_config_perm`` (cores -> VM.Config.CPU, memory -> VM.Config.Memory, vga ->
  VM.Config.HWType, name/agent/ostype/bios/description -> VM.Config.Options, boot -> VM.Config.Disk,
  netN -> VM.Config.Network, ipconfigN -> VM.Config.Cloudinit or .Network), Datastore.AllocateSpace on
  the storage of a new disk, check_volume_access for ISOs and import sources; 8.4 also wants
  VM.Config.HWType for a serial socket; a CD-ROM change wants VM.Config.CDROM; start/stop/shutdown
  VM.PowerMgmt; status and config VM.Audit; template and destroy VM.Allocate; clone VM.Clone;
  the guest agent VM.Monitor on 8.4, VM.GuestAgent.Audit (or .Unrestricted) on 9 (API2/Qemu/Agent.pm);
  vncproxy VM.Console.
- pve-guest-common src/PVE/GuestHelpers.pm check_vnet_access: SDN.Use on /sdn/zones/<zone>/<bridge>
  (zone ``localnetwork`` for a Linux bridge), .../<tag> for a VLAN tag.
- pve-storage src/PVE/API2/Storage/Status.pm upload: Datastore.AllocateTemplate; Content.pm delete:
  Datastore.Allocate; Content.pm index: Datastore.Audit or Datastore.AllocateSpace.
- pve-manager src/PVE/API2/Cluster.pm resources and Nodes.pm index: a node's memory and CPU figures
  only with Sys.Audit on /nodes/<node>.
- pve-network src/PVE/API2/Network/SDN*.pm: SDN.Allocate on /sdn/zones (a zone), /sdn/zones/<zone> (a
  vnet), /sdn/zones/<zone>/<vnet> (a subnet), /sdn (apply).
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# qemu-server src/PVE/API2/Qemu.pm: the privilege each VM option needs
_OPTION_PRIVS: dict[str, str] = {
    **dict.fromkeys(("cores", "cpu", "cpulimit", "cpuunits", "numa", "sockets", "vcpus"), "VM.Config.CPU"),
    **dict.fromkeys(("memory", "balloon", "shares"), "VM.Config.Memory"),
    **dict.fromkeys(("acpi", "hotplug", "kvm", "machine", "scsihw", "smbios1", "tablet", "vga", "watchdog"),
                    "VM.Config.HWType"),
    **dict.fromkeys(("agent", "autostart", "bios", "description", "keyboard", "localtime", "name", "onboot", "ostype",
                     "protection", "reboot", "startup", "tdf", "template"), "VM.Config.Options"),
    **dict.fromkeys(("boot", "bootdisk"), "VM.Config.Disk"),
}
DRIVE_KEY = re.compile(r"^(ide|sata|scsi|virtio)\d+$|^efidisk0$|^tpmstate0$")
CDROM_KEYS = ("ide0", "ide1", "ide2", "ide3")
ROLE = "Imgbuild"


def agent_privileges(major: int) -> tuple[str, ...]:
    """The guest agent's read calls: VM.Monitor until PVE 8, VM.GuestAgent.Audit from PVE 9 (which has no
    VM.Monitor any more; VM.GuestAgent.Unrestricted also allows them)."""
    return ("VM.Monitor",) if major < 9 else ("VM.GuestAgent.Audit",)


@dataclass(frozen=True)
class Need:
    path: str  # ACL path
    privs: tuple[str, ...]  # all of them (any of them with any_of)
    why: str
    any_of: bool = False

    def missing_from(self, have: Iterable[str]) -> tuple[str, ...]:
        owned = set(have)
        if self.any_of:
            return () if owned & set(self.privs) else self.privs
        return tuple(p for p in self.privs if p not in owned)


@dataclass(frozen=True)
class Plan:
    """What a job will ask of PVE, in the terms the privileges depend on."""

    major: int  # PVE major version (8 or 9)
    vm_path: str = "/vms"  # /vms/<vmid> once the id is known
    vm_keys: tuple[str, ...] = ()  # options of the create call (vmconfig.create_params)
    iso_storage: str | None = "local"
    image_storage: str | None = "local"  # None: no golden image upload (installer method, or clone)
    disk_storage: str | None = "local-lvm"
    bridges: tuple[tuple[str, str, int | None], ...] = (("localnetwork", "vmbr0", None),)  # (zone, bridge, tag)
    node_paths: tuple[str, ...] = ()  # /nodes/<node> whose figures are read to place the VM
    console: bool = False  # the desktop check opens the console (vncproxy)
    clone_from: str | None = None  # /vms/<vmid> of the VM or template a clone is made from
    sdn_zone: str | None = None  # imgbuild makes or adjusts this zone's NAT vnet ...
    sdn_vnet: str | None = None  # ... this one
    new_zone: bool = False  # ... creating the zone itself


def needs(plan: Plan) -> list[Need]:
    """Every privilege the job's calls need, grouped by ACL path."""
    out: list[Need] = []
    vm = plan.vm_path
    option_privs = sorted({_OPTION_PRIVS[k] for k in plan.vm_keys if k in _OPTION_PRIVS})
    if any(DRIVE_KEY.match(k) and k not in CDROM_KEYS for k in plan.vm_keys):
        option_privs = sorted({*option_privs, "VM.Config.Disk"})
    if any(re.match(r"^net\d+$", k) for k in plan.vm_keys):
        option_privs = sorted({*option_privs, "VM.Config.Network"})
    if plan.major < 9 and any(re.match(r"^serial\d+$", k) for k in plan.vm_keys):
        option_privs = sorted({*option_privs, "VM.Config.HWType"})
    out.append(Need(vm, ("VM.Allocate",), "create, replace and destroy VMs"))
    if option_privs:
        out.append(Need(vm, tuple(option_privs), "set the VM's options (" + ", ".join(
            sorted(k for k in plan.vm_keys if k in _OPTION_PRIVS)[:6]) + ", disks, NICs ...)"))
    out.append(Need(vm, ("VM.Config.CDROM",), "insert and eject the seed ISO"))
    out.append(Need(vm, ("VM.PowerMgmt",), "start and shut down the VM"))
    out.append(Need(vm, ("VM.Audit",), "read the VM's state and configuration"))
    out.append(Need(vm, agent_privileges(plan.major), "read the guest's address from its agent"))
    if any(re.match(r"^ipconfig\d+$", k) for k in plan.vm_keys):
        out.append(Need(vm, ("VM.Config.Cloudinit", "VM.Config.Network"), "record the static address (ipconfig0)",
                        any_of=True))
    if plan.console:
        out.append(Need(vm, ("VM.Console",), "open the console for the desktop check (vncproxy)"))
    if plan.clone_from:
        out.append(Need(plan.clone_from, ("VM.Clone",), "clone it"))
    storages: dict[str, set[str]] = {}
    reasons: dict[str, list[str]] = {}

    def want(storage: str | None, privs: Iterable[str], why: str) -> None:
        if storage:
            storages.setdefault(storage, set()).update(privs)
            reasons.setdefault(storage, []).append(why)

    want(plan.iso_storage, ("Datastore.AllocateTemplate", "Datastore.Allocate", "Datastore.Audit"),
         "upload and remove seed ISOs")
    want(plan.image_storage, ("Datastore.AllocateTemplate", "Datastore.Allocate", "Datastore.Audit"),
         "upload golden images, remove superseded ones")
    want(plan.disk_storage, ("Datastore.AllocateSpace",), "allocate VM disks")
    for storage in sorted(storages):
        out.append(Need(f"/storage/{storage}", tuple(sorted(storages[storage])), "; ".join(reasons[storage])))
    for zone, bridge, tag in plan.bridges:
        path = f"/sdn/zones/{zone}/{bridge}" + (f"/{tag}" if tag else "")
        out.append(Need(path, ("SDN.Use",), f"attach the VM's NIC to {bridge}" + (f" (VLAN {tag})" if tag else "")))
    for node_path in plan.node_paths:
        out.append(Need(node_path, ("Sys.Audit",), "read the node's free memory and CPU load to place the VM"))
    if plan.sdn_zone and plan.sdn_vnet:
        if plan.new_zone:
            out.append(Need("/sdn/zones", ("SDN.Allocate",), f"create the SDN zone {plan.sdn_zone}"))
        out.append(Need(f"/sdn/zones/{plan.sdn_zone}", ("SDN.Allocate",), f"create the vnet {plan.sdn_vnet}"))
        out.append(Need(f"/sdn/zones/{plan.sdn_zone}/{plan.sdn_vnet}", ("SDN.Allocate",),
                        "create its subnet (gateway, SNAT, DHCP range)"))
        out.append(Need("/sdn", ("SDN.Allocate",), "apply the SDN configuration (PUT /cluster/sdn)"))
    return out


@dataclass
class Shortfall:
    """What a token lacks: per path, the privileges and why they are needed."""

    missing: list[tuple[Need, tuple[str, ...]]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.missing)

    def lines(self) -> list[str]:
        return [f"{'any of ' if need.any_of else ''}{', '.join(privs)} on {need.path}: {need.why}"
                for need, privs in self.missing]


def shortfall(required: list[Need], have: Mapping[str, Iterable[str]]) -> Shortfall:
    """Compare *required* with the privileges the token *has* on each path."""
    out = Shortfall()
    for need in required:
        lacking = need.missing_from(have.get(need.path, ()))
        if lacking:
            out.missing.append((need, lacking))
    return out


def grant_path(path: str) -> str:
    """Where to grant a privilege needed on *path*: the collection (/vms, /storage/X, /nodes, the bridge)."""
    if path.startswith("/vms/"):
        return "/vms"
    if path.startswith("/nodes/"):
        return "/nodes"
    return path


def role_privileges(major: int, *, sdn: bool = False) -> list[str]:
    """The minimal role for everything imgbuild does (make, verify, template, clone, destroy, status)."""
    privs = {"VM.Allocate", "VM.Audit", "VM.Clone", "VM.Config.CDROM", "VM.Config.CPU", "VM.Config.Cloudinit",
             "VM.Config.Disk", "VM.Config.HWType", "VM.Config.Memory", "VM.Config.Network", "VM.Config.Options",
             "VM.Console", "VM.PowerMgmt", *agent_privileges(major), "Datastore.Allocate", "Datastore.AllocateSpace",
             "Datastore.AllocateTemplate", "Datastore.Audit", "SDN.Use", "Sys.Audit"}
    if sdn:
        privs |= {"SDN.Allocate", "SDN.Audit"}
    return sorted(privs)


def pveum_commands(token_id: str, paths: Iterable[str], major: int, *, sdn: bool = False) -> list[str]:
    """``pveum`` commands that create the role and grant it on *paths*, to the token and to its user (a
    privilege-separated token only has what both have)."""
    user = token_id.split("!", 1)[0]
    cmds = [f"pveum role add {ROLE} --privs {shlex.quote(','.join(role_privileges(major, sdn=sdn)))}"]
    for path in sorted(set(paths)):
        cmds.append(f"pveum acl modify {path} --users {user} --tokens {shlex.quote(token_id)} --roles {ROLE}")
    return cmds


def advice(missing: Shortfall, token_id: str, major: int) -> str:
    sdn = any(p.startswith("SDN.Allocate") for _, privs in missing.missing for p in privs)
    paths = [grant_path(need.path) for need, _ in missing.missing]
    if sdn:
        paths = [p if not p.startswith("/sdn/zones/") or p.startswith("/sdn/zones/localnetwork") else "/sdn"
                 for p in paths]
    lines = ["the token lacks:", *(f"  {line}" for line in missing.lines()),
             f"grant them (on a PVE node, as root; if the role {ROLE} exists, `pveum role modify` it instead of `add`):",
             *(f"  {cmd}" for cmd in pveum_commands(token_id, paths, major, sdn=sdn))]
    return "\n".join(lines)


def privileges_markdown() -> str:
    """The privileges section of docs/pve-target.md (minimal role per version)."""
    token = "imgbuild@pve!build"
    paths = ["/vms", "/storage", "/nodes", "/sdn/zones/localnetwork"]
    out = ["## The token's privileges", "",
           "`imgbuild doctor` lists what the token may do and what it lacks, and `make` checks the same before it "
           "uploads or creates anything. A minimal role (PVE 9 has no `VM.Monitor`; the guest agent needs "
           "`VM.GuestAgent.Audit` there):", ""]
    for major in (9, 8):
        out += [f"PVE {major}:", "", "```sh", "pveum user add imgbuild@pve",
                "pveum user token add imgbuild@pve build --privsep 1   # prints the secret once",
                *pveum_commands(token, paths, major), "```", ""]
    out += ["NAT recipes through SDN (`network.mode: nat` on a vnet imgbuild makes) also need `SDN.Allocate` "
            "(and `SDN.Audit`) on `/sdn`:", "", "```sh",
            f"pveum role modify {ROLE} --append 1 --privs SDN.Allocate,SDN.Audit",
            f"pveum acl modify /sdn --users imgbuild@pve --tokens {shlex.quote(token)} --roles {ROLE}", "```", ""]
    return "\n".join(out)
