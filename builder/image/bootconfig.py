"""Text of the files a golden image is configured with (pure: values in, text out)."""

from __future__ import annotations

from dataclasses import dataclass

SERIAL = "console=tty0 console=ttyS0,115200"  # the last console= is /dev/console: the serial log sees boot


@dataclass(frozen=True)
class BootInfo:
    bios: str  # "seabios" | "ovmf"
    root_uuid: str
    kernel_version: str
    release: str
    esp_uuid: str | None = None  # "ABCD-1234" for OVMF images


def grub_cfg(info: BootInfo) -> str:
    part = "part_gpt" if info.bios == "ovmf" else "part_msdos"
    video = "insmod efi_gop\ninsmod efi_uga\n" if info.bios == "ovmf" else ""
    kver = info.kernel_version
    return f"""\
# Written by imgbuild. update-grub in the guest replaces it (see /etc/default/grub.d/50-imgbuild.cfg).
serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1
terminal_input serial console
terminal_output serial console
set timeout=0
set default=0
insmod {part}
insmod ext2
{video}search --no-floppy --fs-uuid --set=root {info.root_uuid}
menuentry 'Debian GNU/Linux {info.release} ({kver})' {{
    linux /boot/vmlinuz-{kver} root=UUID={info.root_uuid} ro {SERIAL}
    initrd /boot/initrd.img-{kver}
}}
"""


def grub_early_cfg(info: BootInfo) -> str:
    """Config embedded in the EFI core image: find the root filesystem; normal mode then reads its grub.cfg."""
    return f"""\
search --no-floppy --fs-uuid --set=root {info.root_uuid}
set prefix=($root)/boot/grub
"""


def grub_defaults() -> str:
    """/etc/default/grub.d drop-in so a later update-grub in the guest keeps the serial console."""
    return f"""\
# Written by imgbuild: boots visible on the serial console, no menu wait (as Debian's cloud images).
GRUB_TIMEOUT=0
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="{SERIAL}"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200 --word=8 --parity=no --stop=1"
"""


def fstab(info: BootInfo) -> str:
    lines = [
        "# <file system> <mount point> <type> <options> <dump> <pass>",
        f"UUID={info.root_uuid} / ext4 errors=remount-ro 0 1",
    ]
    if info.esp_uuid:
        lines.append(f"UUID={info.esp_uuid} /boot/efi vfat umask=0077 0 1")
    return "\n".join(lines) + "\n"


def cloud_cfg() -> str:
    """cloud.cfg.d drop-in: find the NoCloud seed (CIDATA), render network config for systemd-networkd."""
    return """\
# Written by imgbuild.
# NoCloud finds the seed ISO labelled CIDATA; None lets a boot without a seed finish.
datasource_list: [ NoCloud, None ]
# Render network-config v2 for systemd-networkd (DNS applied by systemd-resolved), not ifupdown.
system_info:
  network:
    renderers: [ networkd ]
    activators: [ networkd ]
"""


def hostname() -> str:
    return "debian\n"


def keyboard_layout(keyboard: str) -> tuple[str, str]:
    """XKB layout and variant of a recipe's keyboard: "de(nodeadkeys)" -> ("de", "nodeadkeys")."""
    layout, _, variant = keyboard.partition("(")
    return layout, variant.rstrip(")")


def default_keyboard(keyboard: str) -> str:
    """/etc/default/keyboard (keyboard-configuration(5)): read by console-setup for the console and by
    Xorg (through udev) for X sessions."""
    layout, variant = keyboard_layout(keyboard)
    return f"""\
# Written by imgbuild for the recipe's keyboard. See keyboard(5).
XKBMODEL="pc105"
XKBLAYOUT="{layout}"
XKBVARIANT="{variant}"
XKBOPTIONS=""

BACKSPACE="guess"
"""
