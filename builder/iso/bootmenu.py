"""Boot menus for the installer ISOs: the kernel command line, isolinux.cfg and grub.cfg. Pure text.

Kernel line (see FACTS): ``priority=critical`` without ``auto=true``; the preseed is ``/preseed.cfg``
inside the initrd, which d-i loads by itself. Arguments before ``---`` are for the installer only
(caller extras such as ``log_host=… log_port=…``); the consoles after ``---`` are also copied to the
installed system's boot loader. The serial console comes last, so it is /dev/console and the installer's
dialogs are visible on it; the VGA console keeps kernel messages on the screen.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from builder.errors import InvalidInput

INSTALLER_ARGS = ("priority=critical",)
CONSOLE_ARGS = ("console=tty0", "console=ttyS0,115200n8")
DEFAULT_TIMEOUT_S = 3

# Kernel arguments we are willing to write into boot loader configs: no quotes, spaces, '$', ';' etc.
_SAFE_ARG = re.compile(r"^[A-Za-z0-9_./:,=+@%~-]+$")


def check_kernel_args(args: Sequence[str]) -> tuple[str, ...]:
    bad = [a for a in args if not _SAFE_ARG.match(a)]
    if bad:
        raise InvalidInput(
            "kernel arguments may only contain letters, digits and _ . / : , = + @ % ~ - "
            f"(no spaces or quotes): {', '.join(repr(b) for b in bad)}"
        )
    if "---" in args:
        raise InvalidInput("kernel arguments must not contain '---' (imgbuild places it)")
    return tuple(args)


@dataclass(frozen=True)
class BootEntry:
    title: str
    kernel: str  # absolute path on the ISO, e.g. "/install.amd/vmlinuz"
    initrds: tuple[str, ...]
    installer_args: tuple[str, ...] = ()
    system_args: tuple[str, ...] = ()

    def cmdline(self) -> str:
        """Everything after the kernel path (without initrd=)."""
        return " ".join([*self.installer_args, "---", *self.system_args])


def automated_entry(kernel: str, initrds: Sequence[str], extra_args: Sequence[str] = ()) -> BootEntry:
    return BootEntry(
        title="Automated install (imgbuild preseed)",
        kernel=kernel,
        initrds=tuple(initrds),
        installer_args=(*INSTALLER_ARGS, *check_kernel_args(extra_args)),
        system_args=CONSOLE_ARGS,
    )


def rescue_entry(kernel: str, initrds: Sequence[str]) -> BootEntry:
    return BootEntry(
        title="Rescue mode",
        kernel=kernel,
        initrds=tuple(initrds),
        installer_args=("rescue/enable=true",),
        system_args=CONSOLE_ARGS,
    )


def isolinux_cfg(
    entries: Sequence[BootEntry],
    *,
    title: str,
    timeout_s: int = DEFAULT_TIMEOUT_S,
    ui: str | None = "menu.c32",
    extra_labels: str = "",
) -> str:
    """An isolinux.cfg whose first entry is the default after *timeout_s* seconds, also on serial."""
    lines = [
        "# written by imgbuild",
        "serial 0 115200",
        "path",
        *([f"ui {ui}"] if ui else ["prompt 1"]),
        f"menu title {title}",
        f"timeout {max(1, timeout_s) * 10}",
        "default entry0",
        "",
    ]
    for i, entry in enumerate(entries):
        lines += [
            f"label entry{i}",
            f"  menu label {entry.title}",
            *(["  menu default"] if i == 0 else []),
            f"  kernel {entry.kernel}",
            f"  append initrd={','.join(entry.initrds)} {entry.cmdline()}",
            "",
        ]
    if extra_labels:
        lines.append(extra_labels.rstrip("\n"))
        lines.append("")
    return "\n".join(lines)


def _grub_quote(text: str) -> str:
    return "'" + text.replace("'", "'\\''") + "'"


def grub_cfg(
    entries: Sequence[BootEntry], *, timeout_s: int = DEFAULT_TIMEOUT_S, extra_entries: str = "", search_file: str | None = None
) -> str:
    """A grub.cfg: first entry default after *timeout_s*, menu on both the screen and the serial port.

    *search_file*: set $root to the device holding this file first (for GRUBs whose root may be elsewhere).
    """
    lines = ["# written by imgbuild"]
    if search_file:
        lines.append(f"search --no-floppy --set=root --file {search_file}")
    lines += [
        "serial --unit=0 --speed=115200",
        "terminal_input console serial",
        "terminal_output console serial",
        "set default=0",
        f"set timeout={max(1, timeout_s)}",
        "set timeout_style=menu",
        "",
    ]
    for entry in entries:
        lines += [
            f"menuentry {_grub_quote(entry.title)} {{",
            f"    linux {entry.kernel} {entry.cmdline()}",
            f"    initrd {' '.join(entry.initrds)}",
            "}",
            "",
        ]
    if extra_entries:
        lines.append(extra_entries.rstrip("\n"))
        lines.append("")
    return "\n".join(lines)
