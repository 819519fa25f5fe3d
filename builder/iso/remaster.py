"""Remastering an official Debian netinst/DVD ISO into an unattended installer.

What changes (everything else, including both El Torito boot records and an isohybrid MBR/GPT, is
carried over by pycdlib):

* ``install.amd/preseed.gz`` is added: a gzip'd cpio holding ``/preseed.cfg``, loaded as a second
  initrd (``initrd=/install.amd/initrd.gz,/install.amd/preseed.gz`` / ``initrd a b``), so the original
  initrd is left untouched.
* ``isolinux/isolinux.cfg`` and ``boot/grub/grub.cfg`` become short menus whose default is the
  automated install after a few seconds; the originals are kept as ``orig.cfg`` beside them and are
  reachable from the new menus.
* ``md5sum.txt`` is updated for every file changed or added.

Memory stays bounded however big the ISO is: pycdlib reads only the metadata when it opens the image
and copies file data in 1 MiB blocks when it writes the new one.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import pycdlib
import requests

from builder.cachedir import cache_dir, sha256_file
from builder.debian.archive import redact_url
from builder.errors import ImgbuildError, InvalidInput
from builder.fsutil import part_path, sweep_parts
from builder.iso import bootmenu
from builder.iso.cpio import preseed_archive
from builder.iso.gpt import GptError, repair_gpt
from builder.iso.installer import LAYOUT_VERSION, InstallerInfo, source_epoch
from builder.iso.isowriter import pinned_clock
from builder.progress import NullProgress, Progress

KERNEL = "/install.amd/vmlinuz"
INITRD = "/install.amd/initrd.gz"
PRESEED_INITRD = "/install.amd/preseed.gz"
ISOLINUX_CFG = "/isolinux/isolinux.cfg"
ISOLINUX_ORIG = "/isolinux/orig.cfg"
GRUB_CFG = "/boot/grub/grub.cfg"
GRUB_ORIG = "/boot/grub/orig.cfg"
MD5SUMS = "/md5sum.txt"


class RemasterError(ImgbuildError):
    pass


@dataclass
class _Image:
    """An opened base ISO and how to name files in it."""

    iso: pycdlib.PyCdlib
    rock_ridge: bool
    joliet: bool

    def _kw(self, path: str) -> dict[str, str]:
        return {"rr_path": path} if self.rock_ridge else {"iso_path": self.iso_path(path)}

    def exists(self, path: str) -> bool:
        try:
            self.iso.get_record(**self._kw(path))
            return True
        except pycdlib.pycdlibexception.PyCdlibException:
            return False

    def read(self, path: str, limit: int = 4 << 20) -> bytes:
        record = self.iso.get_record(**self._kw(path))
        if record.get_data_length() > limit:
            raise RemasterError(f"{path} in the base ISO is unexpectedly large")
        buf = io.BytesIO()
        self.iso.get_file_from_iso_fp(buf, **self._kw(path))
        return buf.getvalue()

    def iso_path(self, path: str) -> str:
        """The ISO 9660 path of an existing file or directory given by its Rock Ridge path."""
        if not self.rock_ridge:
            return path
        record = self.iso.get_record(rr_path=path)
        return self.iso.full_path_from_dirrecord(record)

    def joliet_path(self, path: str) -> str | None:
        if not self.joliet:
            return None
        try:
            self.iso.get_record(joliet_path=path)
            return path
        except pycdlib.pycdlibexception.PyCdlibException:
            return None

    def remove(self, path: str) -> None:
        self.iso.rm_file(iso_path=self.iso_path(path))

    def add(self, path: str, data: bytes) -> None:
        """Add *path* (its directory must exist) with an 8.3-safe ISO 9660 name."""
        parent, name = path.rsplit("/", 1)
        stem, _, ext = name.partition(".")
        iso_name = f"{re.sub(r'[^A-Z0-9_]', '_', stem.upper())[:8]}.{re.sub(r'[^A-Z0-9_]', '_', ext.upper())[:3]};1"
        iso_dir = self.iso_path(parent) if parent else ""
        kwargs: dict = {}
        if self.rock_ridge:
            kwargs["rr_name"] = name
            kwargs["file_mode"] = 0o100444
        if self.joliet and (parent == "" or self.joliet_path(parent) is not None):
            kwargs["joliet_path"] = path
        self.iso.add_fp(io.BytesIO(data), len(data), f"{iso_dir}/{iso_name}", **kwargs)

    def replace(self, path: str, data: bytes) -> None:
        self.remove(path)
        self.add(path, data)


@dataclass(frozen=True)
class BaseLayout:
    isolinux_ui: str | None  # menu.c32 / vesamenu.c32 present in isolinux/, or None
    has_isolinux: bool
    has_grub: bool
    volume_id: str
    release: str = ""  # codename from .disk/info ("trixie"), when it says


def release_from_disk_info(text: str) -> str:
    """'Debian GNU/Linux 13.2.0 "Trixie" - Official amd64 NETINST …' -> 'trixie' ('' if not found)."""
    match = re.search(r'"([A-Za-z]+)"', text)
    return match.group(1).lower() if match else ""


def _inspect(img: _Image) -> BaseLayout:
    missing = [p for p in (KERNEL, INITRD) if not img.exists(p)]
    if missing:
        raise RemasterError(
            f"not an amd64 Debian installer ISO: {', '.join(missing)} missing "
            "(expected the netinst/DVD layout: install.amd/, isolinux/, boot/grub/)"
        )
    has_isolinux = img.exists(ISOLINUX_CFG)
    has_grub = img.exists(GRUB_CFG)
    if not has_isolinux and not has_grub:
        raise RemasterError("the base ISO has neither isolinux/isolinux.cfg nor boot/grub/grub.cfg: "
                            "cannot make it boot unattended")
    ui = next((name for name in ("menu.c32", "vesamenu.c32") if img.exists(f"/isolinux/{name}")), None)
    volume_id = img.iso.pvd.volume_identifier.decode("ascii", "replace").strip()
    release = release_from_disk_info(img.read("/.disk/info").decode("utf-8", "replace")) if img.exists("/.disk/info") else ""
    return BaseLayout(isolinux_ui=ui, has_isolinux=has_isolinux, has_grub=has_grub, volume_id=volume_id, release=release)


def _entries(kernel_args: Sequence[str]) -> list[bootmenu.BootEntry]:
    return [bootmenu.automated_entry(KERNEL, [INITRD, PRESEED_INITRD], kernel_args)]


def isolinux_menu(layout: BaseLayout, kernel_args: Sequence[str]) -> str:
    extra = "\n".join(
        ["label original", "  menu label Original Debian boot menu", f"  config {ISOLINUX_ORIG} /isolinux/"]
    )
    return bootmenu.isolinux_cfg(
        _entries(kernel_args),
        title=f"imgbuild: automated install ({layout.volume_id})",
        ui=layout.isolinux_ui,
        extra_labels=extra,
    )


def grub_menu(kernel_args: Sequence[str]) -> str:
    extra = "\n".join(["menuentry 'Original Debian boot menu' {", f"    configfile {GRUB_ORIG}", "}"])
    return bootmenu.grub_cfg(_entries(kernel_args), extra_entries=extra)


def update_md5sums(text: str, changed: dict[str, bytes]) -> str:
    """md5sum.txt with the lines for *changed* ({"/path": content}) replaced or added."""
    wanted = {"./" + path.lstrip("/"): hashlib.md5(data).hexdigest() for path, data in changed.items()}
    out: list[str] = []
    for line in text.splitlines():
        _digest, sep, name = line.partition("  ")
        if sep and name in wanted:
            out.append(f"{wanted.pop(name)}  {name}")
        else:
            out.append(line)
    out += [f"{digest}  {name}" for name, digest in sorted(wanted.items())]
    return "\n".join(out) + "\n"


def _base_identity(path: Path, layout: BaseLayout) -> dict[str, object]:
    st = path.stat()
    return {"volume": layout.volume_id, "size": st.st_size, "name": path.name}


def remaster_iso(
    base_iso: Path,
    preseed: bytes,
    dest: Path,
    *,
    kernel_args: Sequence[str] = (),
    progress: Progress = NullProgress(),
) -> InstallerInfo:
    """Write *dest*: the Debian ISO *base_iso* made to install unattended with *preseed*."""
    base_iso, dest = Path(base_iso), Path(dest)
    kernel_args = bootmenu.check_kernel_args(kernel_args)
    if not base_iso.is_file():
        raise InvalidInput(f"base ISO not found: {base_iso}")
    if base_iso.resolve() == dest.resolve():
        raise InvalidInput("the remastered ISO must not overwrite its base ISO")
    if not preseed.strip():
        raise InvalidInput("the preseed is empty")
    progress.step(f"reading {base_iso.name}")
    iso = pycdlib.PyCdlib()
    try:
        with open(base_iso, "rb") as src:
            try:
                iso.open_fp(src)
            except pycdlib.pycdlibexception.PyCdlibException as exc:
                raise RemasterError(f"{base_iso.name} is not a readable ISO 9660 image: {exc}") from exc
            img = _Image(iso, rock_ridge=iso.has_rock_ridge(), joliet=iso.has_joliet())
            layout = _inspect(img)
            epoch = source_epoch(
                {
                    "layout": LAYOUT_VERSION + "-remaster",
                    "base": _base_identity(base_iso, layout),
                    "preseed": hashlib.sha256(preseed).hexdigest(),
                    "args": list(kernel_args),
                }
            )
            with pinned_clock(epoch):
                changed = _apply(img, layout, preseed, kernel_args)
                if img.exists(MD5SUMS):
                    img.replace(MD5SUMS, update_md5sums(img.read(MD5SUMS).decode("utf-8", "replace"), changed).encode())
                else:
                    progress.note(f"{base_iso.name} has no md5sum.txt; none written")
                progress.step(f"writing {dest.name}")

                def report(done: int, total: int, _opaque: object) -> None:
                    progress.transfer(f"writing {dest.name}", done, total)

                with part_path(dest) as tmp:
                    with open(tmp, "wb") as out:
                        iso.write_fp(out, blocksize=1 << 20, progress_cb=report)
                    if iso.isohybrid_mbr is not None:
                        repair_gpt(tmp)  # pycdlib leaves the GPT's CRCs stale
                    with open(tmp, "rb+") as fh:
                        os.fsync(fh.fileno())
                    os.replace(tmp, dest)
    except (pycdlib.pycdlibexception.PyCdlibException, GptError) as exc:
        raise RemasterError(f"cannot remaster {base_iso.name}: {exc}") from exc
    finally:
        with contextlib.suppress(Exception):
            iso.close()
    return InstallerInfo(
        path=dest,
        sha256=sha256_file(dest),
        size=dest.stat().st_size,
        release=layout.release,
        netboot_version="",
        kernel_args=(*bootmenu.INSTALLER_ARGS, *kernel_args),
        epoch=epoch,
        source=f"remaster:{base_iso.name}",
    )


def _apply(img: _Image, layout: BaseLayout, preseed: bytes, kernel_args: Sequence[str]) -> dict[str, bytes]:
    """Make the changes; return {path: new content} for md5sum.txt."""
    changed: dict[str, bytes] = {}
    if img.exists(PRESEED_INITRD):
        img.remove(PRESEED_INITRD)
    data = preseed_archive(preseed)
    img.add(PRESEED_INITRD, data)
    changed[PRESEED_INITRD] = data
    if layout.has_isolinux:
        original = img.read(ISOLINUX_CFG)
        if img.exists(ISOLINUX_ORIG):  # remastering a remaster: keep the first original
            original = img.read(ISOLINUX_ORIG)
            img.remove(ISOLINUX_ORIG)
        img.add(ISOLINUX_ORIG, original)
        menu = isolinux_menu(layout, kernel_args).encode()
        img.replace(ISOLINUX_CFG, menu)
        changed[ISOLINUX_ORIG], changed[ISOLINUX_CFG] = original, menu
    if layout.has_grub:
        original = img.read(GRUB_CFG)
        if img.exists(GRUB_ORIG):
            original = img.read(GRUB_ORIG)
            img.remove(GRUB_ORIG)
        img.add(GRUB_ORIG, original)
        menu = grub_menu(kernel_args).encode()
        img.replace(GRUB_CFG, menu)
        changed[GRUB_ORIG], changed[GRUB_CFG] = original, menu
    return changed


# --- base ISO from a URL ---------------------------------------------------------------------------


def _sums_lookup(text: str, name: str) -> str | None:
    for line in text.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*./") == name and re.fullmatch(r"[0-9a-fA-F]{64}", parts[0]):
            return parts[0].lower()
    return None


@contextlib.contextmanager
def _session(proxy: str | None) -> Iterator[requests.Session]:
    session = requests.Session()
    session.verify = True
    if proxy:
        session.proxies.update({"http": proxy, "https": proxy})
    try:
        yield session
    finally:
        session.close()


def fetch_base_iso(
    url: str, sums_url: str, *, proxy: str | None = None, progress: Progress = NullProgress(), timeout: float = 60
) -> Path:
    """Download an ISO, streaming to the cache, accepted only if it matches its entry in *sums_url*.

    Cached by SHA256 under ``cache_dir("base-iso")``; a later call with the same checksum reuses it.
    """
    name = PurePosixPath(urlsplit(url).path).name
    if not name:
        raise InvalidInput(f"base ISO URL has no file name: {redact_url(url)}")
    with _session(proxy) as session:
        try:
            resp = session.get(sums_url, timeout=(15, timeout))
        except requests.RequestException as exc:
            raise ImgbuildError(f"cannot fetch {redact_url(sums_url)}", detail=str(exc)) from exc
        if resp.status_code != 200:
            raise ImgbuildError(f"HTTP {resp.status_code} for {redact_url(sums_url)}")
        expected = _sums_lookup(resp.text, name)
        if expected is None:
            raise ImgbuildError(f"{redact_url(sums_url)} lists no SHA256 for {name}")
        dest = cache_dir("base-iso") / f"{expected}.iso"
        if dest.exists() and sha256_file(dest) == expected:
            return dest
        sweep_parts(dest.parent)  # downloads a killed run left
        digest = hashlib.sha256()
        with part_path(dest) as tmp:
            with open(tmp, "wb") as out:
                try:
                    with session.get(url, stream=True, timeout=(15, timeout)) as resp:
                        if resp.status_code != 200:
                            raise ImgbuildError(f"HTTP {resp.status_code} for {redact_url(url)}")
                        total = int(resp.headers.get("Content-Length", "0") or 0) or None
                        done = 0
                        for chunk in resp.iter_content(1 << 20):
                            out.write(chunk)
                            digest.update(chunk)
                            done += len(chunk)
                            progress.transfer(name, done, total)
                except requests.RequestException as exc:
                    raise ImgbuildError(f"download of {redact_url(url)} failed", detail=str(exc)) from exc
            if digest.hexdigest() != expected:
                raise ImgbuildError(
                    f"{name} does not match {redact_url(sums_url)} (expected {expected}, got {digest.hexdigest()})"
                )
            os.replace(tmp, dest)
    return dest


__all__ = ["BaseLayout", "RemasterError", "fetch_base_iso", "grub_menu", "isolinux_menu", "remaster_iso", "update_md5sums"]

