"""What a golden image holds: the spec, and the package set it resolves to (pure, no I/O)."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Literal

from builder.errors import InvalidInput
from builder.image.firstboot import FirstBoot
from builder.recipe.values import KEYBOARD, LOCALE

Bios = Literal["seabios", "ovmf"]

RELEASES = ("trixie", "bookworm")
DEFAULT_MIRROR = "http://deb.debian.org/debian"

# Bump when the way an image is assembled changes: it is part of every cache key, so a new
# builder never trusts an image an older one made.
# 2: the recipe's locale is generated in the image.
# 3: reproducible (same packages, same bytes); a first boot trimmed to what the recipe needs; the keyboard.
IMAGE_BUILDER_VERSION = "4"

# What every golden image needs to boot under QEMU/PVE and be personalised by cloud-init.
BASE_PACKAGES = (
    "linux-image-amd64",
    "systemd-sysv",
    "dbus",  # without it systemctl fails in the guest (variant important lacks it)
    "qemu-guest-agent",
    "cloud-init",
    "cloud-guest-utils",  # growpart, so a disk resized by the target is used
    "openssh-server",
    "sudo",  # cloud-init's users: sudo rules are useless without it
    "fdisk",
    "locales",  # the recipe's locale is generated at build time, not by cloud-init on first boot
    # cloud-init renders network-config v2 for systemd-networkd; resolved applies its DNS.
    "systemd-resolved",
)
BOOTLOADER_PACKAGES: dict[str, tuple[str, ...]] = {
    "seabios": ("grub-pc",),
    "ovmf": ("grub-efi-amd64",),
}

_TASK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]*$")
_PACKAGE_NAME = re.compile(r"^[a-z0-9][a-z0-9+.-]+$")
_TIMEZONE = re.compile(r"^[A-Za-z0-9_+-]+(/[A-Za-z0-9_+-]+)*$")


@dataclass(frozen=True)
class ImageSpec:
    """Inputs of a golden image. Everything here is part of the cache key."""

    release: str = "trixie"
    mirror: str = DEFAULT_MIRROR
    proxy: str | None = None  # HTTP proxy for apt while building (not kept in the image)
    tasks: tuple[str, ...] = ()  # tasksel names: "standard", "ssh-server", "web-server", "lxde-desktop" ...
    packages: tuple[str, ...] = ()
    disk_size: int = 8 * 1024**3
    bios: Bios = "seabios"
    # Generated and made the default at build time: cloud-init's locale module then has nothing to do
    # (generating it on first boot took 32 s of a 2-minute first boot under TCG).
    locale: str = "en_US.UTF-8"
    # XKB layout, optionally with a variant: "de", "de(nodeadkeys)". Set in /etc/default/keyboard at build
    # time, with the console keymap compiled (console-setup), as Debian's installer would.
    keyboard: str = "us"
    timezone: str = "Etc/UTC"  # set at build time: cloud-init's timezone module has nothing to do
    # What the recipe's seed asks of the first boot (builder/image/firstboot.py).
    first_boot: FirstBoot = field(default_factory=FirstBoot)

    def __post_init__(self) -> None:
        problems = validate(self)
        if problems:
            raise InvalidInput("invalid image spec: " + "; ".join(problems))

    def key_data(self) -> dict:
        data = asdict(self)
        # The proxy changes how packages are fetched, not what the image holds.
        data.pop("proxy", None)
        data["tasks"] = sorted(set(self.tasks))
        data["packages"] = sorted(set(self.packages))
        data["builder"] = IMAGE_BUILDER_VERSION
        return data


def validate(spec: ImageSpec) -> list[str]:
    problems = []
    if spec.release not in RELEASES:
        problems.append(f"release {spec.release!r} is not one of {', '.join(RELEASES)}")
    if not re.match(r"^(https?|file)://", spec.mirror):
        problems.append(f"mirror {spec.mirror!r} is not an http(s):// or file:// URL")
    if spec.proxy is not None and not re.match(r"^https?://", spec.proxy):
        problems.append(f"proxy {spec.proxy!r} is not an http(s):// URL")
    for task in spec.tasks:
        if not _TASK_NAME.match(task):
            problems.append(f"task {task!r} is not a tasksel task name")
    for pkg in spec.packages:
        if not _PACKAGE_NAME.match(pkg):
            problems.append(f"package {pkg!r} is not a Debian package name")
    if not LOCALE.match(spec.locale):
        problems.append(f"locale {spec.locale!r} is not a locale such as en_US.UTF-8")
    if not _TIMEZONE.match(spec.timezone) or ".." in spec.timezone:
        problems.append(f"time zone {spec.timezone!r} is not a tz database name such as Etc/UTC")
    if not KEYBOARD.match(spec.keyboard):
        problems.append(f"keyboard {spec.keyboard!r} is not a keyboard layout such as us or de(nodeadkeys)")
    if spec.bios not in BOOTLOADER_PACKAGES:
        problems.append(f"bios {spec.bios!r} is not one of {', '.join(BOOTLOADER_PACKAGES)}")
    if spec.disk_size < 2 * 1024**3:
        problems.append(f"disk size {spec.disk_size} bytes is below the 2 GiB a Debian image needs")
    if spec.disk_size % (1024 * 1024):
        problems.append(f"disk size {spec.disk_size} bytes is not a whole number of MiB")
    return problems


def variant(spec: ImageSpec) -> str:
    """mmdebstrap variant: the 'standard' task is the standard-priority package set."""
    return "standard" if "standard" in spec.tasks else "important"


def task_packages(tasks: tuple[str, ...]) -> list[str]:
    """tasksel task names as the ``task-*`` packages that implement them ('standard' is a variant)."""
    return [f"task-{t}" for t in sorted(set(tasks)) if t != "standard"]


def keyboard_packages(keyboard: str) -> tuple[str, ...]:
    """What a keyboard other than the kernel's built-in US one needs: /etc/default/keyboard and a console keymap."""
    return () if keyboard == "us" else KEYBOARD_PACKAGES


KEYBOARD_PACKAGES = ("keyboard-configuration", "console-setup")


def package_set(spec: ImageSpec) -> list[str]:
    """Every package mmdebstrap is asked to include, in a stable order."""
    wanted = [*BASE_PACKAGES, *BOOTLOADER_PACKAGES[spec.bios], *keyboard_packages(spec.keyboard),
              *task_packages(spec.tasks), *sorted(spec.packages)]
    return list(dict.fromkeys(wanted))  # first occurrence wins, order kept
