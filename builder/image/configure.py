"""Turn a freshly bootstrapped root directory into a golden image's root: boot config, serial console,
cloud-init datasource and renderer, no identity (host keys, machine-id, cloud-init state), and the
GRUB images the disk assembly writes (built inside the root with the guest's own GRUB)."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from builder.errors import ImgbuildError
from builder.image import bootconfig
from builder.image.bootconfig import BootInfo
from builder.proc import run
from builder.progress import NullProgress, Progress

# Modules built into the BIOS core image: enough to read the root filesystem and load grub.cfg.
BIOS_CORE_MODULES = ("biosdisk", "part_msdos", "ext2", "search_fs_uuid", "normal", "linux", "serial", "terminal")
EFI_CORE_MODULES = (
    "part_gpt", "part_msdos", "fat", "ext2", "search", "search_fs_uuid", "normal", "linux", "configfile",
    "serial", "terminal", "efi_gop", "efi_uga", "all_video", "gzio", "echo", "test",
)  # fmt: skip
PLATFORM = {"seabios": "i386-pc", "ovmf": "x86_64-efi"}


@dataclass(frozen=True)
class BootFiles:
    """Files inside the root that the disk assembly writes outside the filesystem."""

    boot_img: Path | None  # BIOS: first 440 bytes go to sector 0
    core_img: Path  # BIOS: sectors from 1; EFI: \\EFI\\BOOT\\BOOTX64.EFI


def kernel_version(root: Path) -> str:
    """The newest installed kernel under /boot (the one linux-image-amd64 pulled in)."""
    versions = [p.name.removeprefix("vmlinuz-") for p in (root / "boot").glob("vmlinuz-*")]
    versions = [v for v in versions if (root / "boot" / f"initrd.img-{v}").exists()]
    if not versions:
        raise ImgbuildError(f"no kernel with an initrd in {root / 'boot'}: did linux-image-amd64 install?")
    return sorted(versions, key=_version_key)[-1]


def _version_key(v: str) -> list:
    return [int(p) if p.isdigit() else p for p in v.replace("-", ".").replace("+", ".").split(".")]


def _write(root: Path, rel: str, text: str, mode: int = 0o644) -> None:
    path = root / rel.lstrip("/")
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


def _remove(root: Path, pattern: str) -> None:
    for p in root.glob(pattern.lstrip("/")):
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p)
        else:
            p.unlink()


def configure_rootfs(root: Path, info: BootInfo, *, progress: Progress = NullProgress()) -> BootFiles:
    progress.step("image: configuring boot, serial console and cloud-init")
    _write(root, "/etc/fstab", bootconfig.fstab(info))
    _write(root, "/etc/hostname", bootconfig.hostname())
    _write(root, "/etc/default/grub.d/50-imgbuild.cfg", bootconfig.grub_defaults())
    _write(root, "/etc/cloud/cloud.cfg.d/90_imgbuild.cfg", bootconfig.cloud_cfg())
    _write(root, "/boot/grub/grub.cfg", bootconfig.grub_cfg(info))
    if info.bios == "seabios":
        # A later grub-pc upgrade in the guest reinstalls to the virtio disk instead of asking.
        run(["chroot", root, "debconf-set-selections"], input=b"grub-pc grub-pc/install_devices multiselect /dev/vda\n")
    else:
        (root / "boot/efi").mkdir(parents=True, exist_ok=True)
    run(["chroot", root, "systemctl", "enable", "systemd-networkd.service", "systemd-resolved.service"])

    resolv = root / "etc/resolv.conf"  # mmdebstrap copied the build host's; resolved provides the stub
    if resolv.exists() or resolv.is_symlink():
        resolv.unlink()
    resolv.symlink_to("../run/systemd/resolve/stub-resolv.conf")

    progress.step("image: removing build identity (host keys, machine-id, cloud-init state)")
    _remove(root, "/etc/ssh/ssh_host_*")
    _write(root, "/etc/machine-id", "", 0o444)
    _remove(root, "/var/lib/dbus/machine-id")
    _remove(root, "/var/lib/cloud/*")
    _remove(root, "/var/log/cloud-init*")
    _remove(root, "/etc/apt/apt.conf.d/99mmdebstrap")  # build-time apt options (a proxy) stay out
    _remove(root, "/var/cache/apt/archives/*.deb")

    return _grub_images(root, info)


def _grub_images(root: Path, info: BootInfo) -> BootFiles:
    platform = PLATFORM[info.bios]
    src = root / "usr/lib/grub" / platform
    if not src.is_dir():
        raise ImgbuildError(f"GRUB for {platform} is missing in the image ({src}); its bootloader package did not install")
    dst = root / "boot/grub" / platform
    dst.mkdir(parents=True, exist_ok=True)
    for f in src.iterdir():
        if f.suffix in (".mod", ".lst", ".o") or f.name == "modinfo.sh":
            shutil.copy2(f, dst / f.name)
    if info.bios == "seabios":
        run([
            "chroot", root, "grub-mkimage", "-O", "i386-pc", "-o", f"/boot/grub/{platform}/core.img",
            "-p", "(hd0,msdos1)/boot/grub", *BIOS_CORE_MODULES,
        ])  # fmt: skip
        shutil.copy2(src / "boot.img", dst / "boot.img")
        return BootFiles(boot_img=dst / "boot.img", core_img=dst / "core.img")
    _write(root, "/boot/grub/early.cfg", bootconfig.grub_early_cfg(info))
    run([
        "chroot", root, "grub-mkimage", "-O", "x86_64-efi", "-o", f"/boot/grub/{platform}/bootx64.efi",
        "-c", "/boot/grub/early.cfg", "-p", "/boot/grub", *EFI_CORE_MODULES,
    ])  # fmt: skip
    return BootFiles(boot_img=None, core_img=dst / "bootx64.efi")
