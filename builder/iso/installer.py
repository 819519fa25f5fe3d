"""The unattended installer ISO built from the Debian netboot installer, and the per-recipe ISO set.

Layout of installer.iso (BIOS via isolinux El Torito, UEFI via an El Torito FAT image)::

    install.amd/vmlinuz, install.amd/initrd.gz   netboot kernel; initrd + appended cpio with /preseed.cfg
    isolinux/                                    isolinux.bin, ldlinux.c32, menu.c32 + libs, isolinux.cfg
    debian-installer/amd64/grub/grub.cfg         read by the netboot GRUB (its built-in prefix)
    boot/grub/efi.img                            FAT: EFI/BOOT/BOOTX64.EFI (shim) + GRUBX64.EFI (signed GRUB)
    .imgbuild                                    what this image was built from (plain text)

The netboot GRUB and shim are Debian's signed binaries, so the ISO also boots with Secure Boot on.
Deterministic for the same netboot packages, preseed and kernel arguments.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from builder.cachedir import content_key, sha256_file
from builder.debian import DEFAULT_MIRROR, Archive
from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import write_atomic
from builder.iso import bootmenu
from builder.iso.cpio import preseed_archive
from builder.iso.fat import fat16_image
from builder.iso.isowriter import Concat, ElTorito, IsoBuilder, build_epoch
from builder.iso.netboot import NetbootFiles, fetch_netboot, release_number
from builder.iso.seed import build_seed_iso, content_epoch
from builder.progress import NullProgress, Progress
from builder.render.write import SEED_FILES as RENDERED_SEED_FILES

LAYOUT_VERSION = "imgbuild-installer-iso-1"  # bump when the layout changes: it feeds the timestamp
KERNEL = "/install.amd/vmlinuz"
INITRD = "/install.amd/initrd.gz"
GRUB_PREFIX = "debian-installer/amd64/grub"  # compiled into Debian's netboot grubx64.efi
EFI_IMAGE = "boot/grub/efi.img"
MARKER = ".imgbuild"


@dataclass(frozen=True)
class InstallerInfo:
    path: Path
    sha256: str
    size: int
    release: str
    netboot_version: str
    kernel_args: tuple[str, ...]  # installer arguments (before ---) as written into both menus
    epoch: int
    source: str  # "netboot" or "remaster:<base iso name>"


def source_epoch(key: Mapping[str, object]) -> int:
    """SOURCE_DATE_EPOCH, else a timestamp derived from everything the image is made of (*key*)."""
    return build_epoch(content_key(key))


def efi_boot_image(netboot: NetbootFiles, *, epoch: int) -> bytes:
    """The El Torito EFI image: shim as the removable-media loader, with Debian's netboot GRUB beside it."""
    return fat16_image(
        {
            "EFI/BOOT/BOOTX64.EFI": netboot.path("bootnetx64.efi").read_bytes(),
            "EFI/BOOT/GRUBX64.EFI": netboot.path("grubx64.efi").read_bytes(),
        },
        label="IMGBUILDEFI",
        serial=int(netboot.sha256["grubx64.efi"][:8], 16),
        epoch=epoch,
    )


def installer_entries(kernel_args: Sequence[str]) -> list[bootmenu.BootEntry]:
    return [
        bootmenu.automated_entry(KERNEL, [INITRD], kernel_args),
        bootmenu.rescue_entry(KERNEL, [INITRD]),
    ]


def _marker(netboot: NetbootFiles, preseed: bytes, kernel_args: Sequence[str]) -> bytes:
    lines = [
        "imgbuild automated Debian installer",
        f"release: {netboot.release}",
        f"netboot: {netboot.netboot.name} {netboot.netboot.version} sha256 {netboot.netboot.sha256}",
        f"preseed sha256: {hashlib.sha256(preseed).hexdigest()}",
        f"kernel arguments: {' '.join(kernel_args)}",
        f"layout: {LAYOUT_VERSION}",
    ]
    return ("\n".join(lines) + "\n").encode()


def layout_installer_iso(
    netboot: NetbootFiles, preseed: bytes, *, kernel_args: Sequence[str], epoch: int
) -> IsoBuilder:
    """The installer ISO's files (pure apart from reading the netboot files)."""
    entries = installer_entries(kernel_args)
    title = f"Debian {release_number(netboot.release)} ({netboot.release}) automated install"
    iso = IsoBuilder(f"IMGBUILD_{netboot.release.upper()}"[:32], epoch=epoch)
    iso.add(KERNEL, netboot.path("linux"))
    iso.add(INITRD, Concat((netboot.path("initrd.gz"), preseed_archive(preseed))))
    for name in ("isolinux.bin", "ldlinux.c32", "menu.c32", "libutil.c32", "libcom32.c32"):
        iso.add(f"isolinux/{name}", netboot.path(name))
    iso.add("isolinux/isolinux.cfg", bootmenu.isolinux_cfg(entries, title=f"imgbuild: {title}").encode())
    iso.add(f"{GRUB_PREFIX}/grub.cfg", bootmenu.grub_cfg(entries).encode())
    iso.add(f"{GRUB_PREFIX}/font.pf2", netboot.path("font.pf2"))
    iso.add(EFI_IMAGE, efi_boot_image(netboot, epoch=epoch))
    iso.add(MARKER, _marker(netboot, preseed, kernel_args))
    return iso


def build_installer_iso(
    preseed: bytes,
    dest: Path,
    *,
    release: str,
    mirror: str = DEFAULT_MIRROR,
    proxy: str | None = None,
    kernel_args: Sequence[str] = (),
    progress: Progress = NullProgress(),
    netboot: NetbootFiles | None = None,
    archive: Archive | None = None,
) -> InstallerInfo:
    """Build the unattended installer ISO for *release* at *dest* (atomically)."""
    kernel_args = bootmenu.check_kernel_args(kernel_args)
    if not preseed.strip():
        raise InvalidInput("the preseed is empty")
    if netboot is None:
        archive = archive or Archive(mirror, proxy=proxy, progress=progress)
        netboot = fetch_netboot(release, archive, progress=progress)
    elif netboot.release != release:
        raise ImgbuildError(f"netboot files are for {netboot.release}, not {release}")
    epoch = source_epoch(
        {
            "layout": LAYOUT_VERSION,
            "netboot": netboot.fingerprint(),
            "preseed": hashlib.sha256(preseed).hexdigest(),
            "args": list(kernel_args),
        }
    )
    progress.step(f"building {Path(dest).name} from {netboot.netboot.name} {netboot.netboot.version}")
    iso = layout_installer_iso(netboot, preseed, kernel_args=kernel_args, epoch=epoch)
    path = iso.write(Path(dest), boot=ElTorito(bios="isolinux/isolinux.bin", efi=EFI_IMAGE), progress=progress)
    return InstallerInfo(
        path=path,
        sha256=sha256_file(path),
        size=path.stat().st_size,
        release=release,
        netboot_version=netboot.netboot.version,
        kernel_args=(*bootmenu.INSTALLER_ARGS, *kernel_args),
        epoch=epoch,
        source="netboot",
    )


# --- the per-recipe set: seed.iso + installer.iso + SHA256SUMS ----------------------------------------


@dataclass(frozen=True)
class RecipeIsos:
    seed: Path
    installer: Path
    sha256sums: Path
    sha256: Mapping[str, str]  # file name -> hex digest
    installer_info: InstallerInfo


def read_seed_files(render_dir: Path) -> dict[str, bytes]:
    """The seed files imgbuild renders (render.write.SEED_FILES), never anything else found in *render_dir*:
    a stray ``vendor-data`` there would run as root in the guest."""
    files: dict[str, bytes] = {}
    for name in RENDERED_SEED_FILES:
        path = render_dir / name
        if path.exists():
            files[name] = path.read_bytes()
    return files


def build_recipe_isos(
    render_dir: Path,
    *,
    release: str,
    mirror: str = DEFAULT_MIRROR,
    proxy: str | None = None,
    base_iso: Path | str | None = None,
    base_iso_sums: str | None = None,
    kernel_args: Sequence[str] = (),
    progress: Progress = NullProgress(),
    netboot: NetbootFiles | None = None,
) -> RecipeIsos:
    """From a rendered recipe directory (preseed.cfg, user-data, meta-data, network-config)
    write seed.iso, installer.iso and SHA256SUMS there, each atomically.

    *base_iso*: remaster this official Debian ISO (a path, or an http(s) URL with *base_iso_sums* the URL
    of its SHA256SUMS) instead of building from the netboot installer.
    """
    render_dir = Path(render_dir)
    preseed_path = render_dir / "preseed.cfg"
    if not preseed_path.exists():
        raise ImgbuildError(f"{preseed_path} is missing: render the recipe first")
    preseed = preseed_path.read_bytes()
    files = read_seed_files(render_dir)
    for required in ("user-data", "meta-data"):
        if required not in files:
            raise ImgbuildError(f"{render_dir / required} is missing: render the recipe first")

    progress.step("building seed.iso")
    seed = build_seed_iso(files, render_dir / "seed.iso", epoch=content_epoch(files))

    installer_path = render_dir / "installer.iso"
    if base_iso is not None:
        from builder.iso.remaster import fetch_base_iso, remaster_iso

        if isinstance(base_iso, str) and base_iso.startswith(("http://", "https://")):
            if not base_iso_sums:
                raise InvalidInput("a base ISO URL needs the URL of its SHA256SUMS file too")
            base_path = fetch_base_iso(base_iso, base_iso_sums, proxy=proxy, progress=progress)
        else:
            base_path = Path(base_iso)
        info = remaster_iso(base_path, preseed, installer_path, kernel_args=kernel_args, progress=progress)
    else:
        info = build_installer_iso(
            preseed,
            installer_path,
            release=release,
            mirror=mirror,
            proxy=proxy,
            kernel_args=kernel_args,
            progress=progress,
            netboot=netboot,
        )

    digests = {"seed.iso": sha256_file(seed), "installer.iso": info.sha256}
    sums = render_dir / "SHA256SUMS"
    write_atomic(sums, "".join(f"{digest}  {name}\n" for name, digest in sorted(digests.items())))
    return RecipeIsos(seed=seed, installer=info.path, sha256sums=sums, sha256=digests, installer_info=info)
