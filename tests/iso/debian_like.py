"""A synthetic ISO with the layout of an official Debian netinst/DVD, for remaster tests.

Same directories and boot setup as debian-cd produces (isolinux + vesamenu with ``timeout 0``, GRUB
EFI image that finds the disc through ``/.disk/id/…``, md5sum.txt, isohybrid MBR + GPT via xorriso's
own flags), holding the real netboot kernel and initrd, padded with a sparse file to any size.
Built with xorriso, exactly as debian-cd does; GRUB for the EFI image comes from the host's
grub-efi-amd64-bin (debian-cd uses Debian's signed gcdx64.efi, which we cannot rebuild).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

from builder.debian import Archive, extract_paths
from builder.iso.fat import fat16_image
from builder.iso.netboot import NetbootFiles

DISK_ID = "imgbuild-test-0001"
VOLUME = "Debian 13 amd64 n"

ISOLINUX_CFG = """# D-I config version 2.0
# search path for the c32 support libraries (libcom32, libutil etc.)
path
include menu.cfg
default vesamenu.c32
prompt 0
timeout 0
"""
MENU_CFG = """menu hshift 4
menu width 70
menu title Debian GNU/Linux installer menu (BIOS mode)
include txt.cfg
"""
TXT_CFG = """default install
label install
\tmenu label ^Install
\tkernel /install.amd/vmlinuz
\tappend vga=788 initrd=/install.amd/initrd.gz --- quiet
"""
GRUB_CFG = """if loadfont $prefix/font.pf2 ; then
  set gfxmode=800x600
fi
menuentry --hotkey=i 'Install' {
    set background_color=black
    linux    /install.amd/vmlinuz vga=788 --- quiet
    initrd   /install.amd/initrd.gz
}
"""
EARLY_GRUB = f"""search --no-floppy --file --set=root /.disk/id/{DISK_ID}
set prefix=($root)/boot/grub
source $prefix/x86_64-efi/grub.cfg
"""
GRUB_MODULES = [
    "iso9660", "part_msdos", "part_gpt", "fat", "search", "search_fs_file", "configfile", "normal",
    "linux", "echo", "test", "serial", "terminal", "all_video", "gzio", "font",
]


def _run(cmd: list[str]) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def build_debian_like_iso(
    dest: Path, netboot: NetbootFiles, archive: Archive, *, pad_bytes: int, work: Path
) -> Path:
    tree = work / "tree"
    if tree.exists():
        shutil.rmtree(tree)
    (tree / "isolinux").mkdir(parents=True)
    (tree / "install.amd").mkdir()
    (tree / "boot/grub/x86_64-efi").mkdir(parents=True)
    (tree / ".disk/id").mkdir(parents=True)
    (tree / "pool/main/p/padding").mkdir(parents=True)

    shutil.copy(netboot.path("linux"), tree / "install.amd/vmlinuz")
    shutil.copy(netboot.path("initrd.gz"), tree / "install.amd/initrd.gz")
    for name in ("isolinux.bin", "ldlinux.c32", "libutil.c32", "libcom32.c32"):
        shutil.copy(netboot.path(name), tree / "isolinux" / name)
    syslinux = archive.fetch_deb(netboot.packages["syslinux-common"])
    isolinux = archive.fetch_deb(netboot.packages["isolinux"])
    extras = work / "extras"
    got = extract_paths(syslinux, ["usr/lib/syslinux/modules/bios/vesamenu.c32"], extras)
    shutil.copy(next(iter(got.values())), tree / "isolinux/vesamenu.c32")
    mbr = next(iter(extract_paths(isolinux, ["usr/lib/ISOLINUX/isohdpfx.bin"], extras).values()))
    (tree / "isolinux/isolinux.cfg").write_text(ISOLINUX_CFG)
    (tree / "isolinux/menu.cfg").write_text(MENU_CFG)
    (tree / "isolinux/txt.cfg").write_text(TXT_CFG)
    (tree / "boot/grub/grub.cfg").write_text(GRUB_CFG)
    (tree / "boot/grub/x86_64-efi/grub.cfg").write_text("source /boot/grub/grub.cfg\n")
    shutil.copy(netboot.path("font.pf2"), tree / "boot/grub/font.pf2")
    (tree / ".disk/info").write_text('Debian GNU/Linux 13 "Trixie" - imgbuild test amd64 NETINST\n')
    (tree / ".disk/id" / DISK_ID).write_text("")

    early = work / "early.cfg"
    early.write_text(EARLY_GRUB)
    grub_efi = work / "grubx64.efi"
    _run(["grub-mkimage", "-O", "x86_64-efi", "-o", str(grub_efi), "-p", "/boot/grub", "-c", str(early), *GRUB_MODULES])
    (tree / "boot/grub/efi.img").write_bytes(fat16_image({"EFI/BOOT/BOOTX64.EFI": grub_efi.read_bytes()}))

    pad = tree / "pool/main/p/padding/padding.bin"
    with open(pad, "wb") as fh:
        fh.truncate(pad_bytes)

    sums = []
    for path in sorted(p for p in tree.rglob("*") if p.is_file()):
        rel = path.relative_to(tree).as_posix()
        if rel.startswith("isolinux/isolinux.bin") or rel == "md5sum.txt":
            continue
        digest = hashlib.md5()
        with open(path, "rb") as fh:
            while chunk := fh.read(1 << 20):
                digest.update(chunk)
        sums.append(f"{digest.hexdigest()}  ./{rel}")
    (tree / "md5sum.txt").write_text("\n".join(sums) + "\n")

    _run([
        "xorriso", "-as", "mkisofs", "-r", "-J", "-joliet-long", "-l", "-cache-inodes",
        "-V", VOLUME, "-isohybrid-mbr", str(mbr),
        "-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat",
        "-boot-load-size", "4", "-boot-info-table", "-no-emul-boot",
        "-eltorito-alt-boot", "-e", "boot/grub/efi.img", "-no-emul-boot", "-isohybrid-gpt-basdat",
        "-o", str(dest), str(tree),
    ])
    shutil.rmtree(tree)
    os.sync()
    return dest
