"""Pure translations from a recipe to what the image builder and the targets take."""

from __future__ import annotations

from typing import Literal, cast

from builder.image.firstboot import FirstBoot
from builder.image.spec import ImageSpec
from builder.recipe.model import Recipe
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, Staged, VMSpec

# The recipe schema admits exactly these values (builder/recipe/recipe.schema.json enums).
Bus = Literal["virtio", "scsi", "sata", "ide"]
Cache = Literal["none", "writethrough", "writeback", "directsync", "unsafe"]


def image_spec(recipe: Recipe) -> ImageSpec:
    return ImageSpec(
        release=recipe.release,
        mirror=recipe.mirror.url,
        proxy=recipe.mirror.proxy,
        tasks=recipe.tasks,
        packages=tuple(p for p in recipe.packages),
        disk_size=recipe.disk.size_bytes,
        bios=recipe.vm.bios,
        locale=recipe.locale,
        keyboard=recipe.keyboard,
        timezone=recipe.timezone,
        first_boot=first_boot(recipe),
    )


def first_boot(recipe: Recipe) -> FirstBoot:
    """What the recipe's seed asks of the first boot, for the image (the same rules as the user-data's
    ssh_pwauth and chpasswd in builder/render/cloudinit.py)."""
    root_password = recipe.root.login and bool(recipe.root.password_hash or recipe.root.password_env)
    any_password = any(u.password_hash or u.password_env for u in recipe.users)
    return FirstBoot(root_password=root_password, ssh_password_auth=any_password or root_password,
                     static_network=recipe.network.is_static)


def guest_network(recipe: Recipe) -> GuestNetwork:
    net = recipe.network
    # nat with an address is static addressing inside the NAT subnet; targets care about addressing.
    mode: Literal["static", "dhcp"] = "static" if net.is_static else "dhcp"
    return GuestNetwork(mode=mode, address=net.address, gateway=net.gateway, nameservers=net.nameservers,
                        nat=net.mode == "nat")


def guest_ports(recipe: Recipe) -> tuple[int, ...]:
    ports = {22}
    ports.update(c.port for c in recipe.verify if c.check == "http")
    return tuple(sorted(ports))


def vm_spec(recipe: Recipe, *, disk_source: Staged | None, cdroms: tuple[Staged | None, ...],
            name: str | None = None, mac: str | None = None) -> VMSpec:
    net = recipe.network
    return VMSpec(
        name=name or recipe.name,
        cores=recipe.vm.cores,
        memory_mib=recipe.vm.memory_mib,
        cpu=recipe.vm.cpu,
        display=recipe.vm.display,
        bios=recipe.vm.bios,
        disks=(DiskSpec(size_bytes=recipe.disk.size_bytes, bus=cast(Bus, recipe.disk.bus),
                        cache=cast(Cache, recipe.disk.cache), source=disk_source),),
        cdroms=cdroms,
        nics=(NicSpec(mac=mac or net.mac, bridge=net.bridge, vlan=net.vlan, firewall=net.firewall),),
        network=guest_network(recipe),
        boot=("disk", "cdrom"),
        agent=True,
        guest_ports=guest_ports(recipe),
        description=f"imgbuild recipe {recipe.name}: {recipe.description}",
        node=recipe.vm.node,
    )
