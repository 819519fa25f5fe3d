"""Build (or reuse) a golden qcow2 image for an ImageSpec.

Images live in ``cache_dir("images")`` named by the content key of the spec (which includes
IMAGE_BUILDER_VERSION). A build works in a private temporary directory beside the cache and renames
the finished qcow2 into place last, so a crashed build leaves nothing the next run trusts; a lock per
key stops two processes from building the same image at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from builder.cachedir import cache_dir, cached_sha256, content_key, sha256_file
from builder.errors import ImgbuildError
from builder.fsutil import atomic_output, exclusive_lock, write_atomic
from builder.image import bootstrap as _bootstrap
from builder.image import reproducible
from builder.image.bootconfig import BootInfo
from builder.image.configure import configure_rootfs, kernel_version
from builder.image.disk import DiskIds, assemble_disk, layout_for, mke2fs_reproducible
from builder.image.manifest import (
    Manifest,
    ManifestDiff,
    diff_manifests,
    manifest_of_root,
    manifest_path,
    read_manifest,
    recover_manifest,
    write_manifest,
)
from builder.image.spec import ImageSpec, package_set, variant
from builder.proc import require_tool, run
from builder.progress import NullProgress, Progress

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GoldenImage:
    path: Path  # the qcow2
    key: str  # content key of the spec (+ builder version)
    cached: bool  # True when an earlier build was reused
    manifest: Manifest | None = None  # its installed packages (None: unreadable, see package_manifest)
    # A refresh: the manifest of the image it rebuilt, and whether the rebuild gave the very same bytes
    # (then the cached file was kept as it was: VMs built on it are still up to date).
    previous: Manifest | None = None
    identical: bool = False

    @property
    def changes(self) -> ManifestDiff | None:
        """What a refresh changed in the package set (None when there is nothing to compare)."""
        if self.previous is None or self.manifest is None:
            return None
        return diff_manifests(self.previous, self.manifest)


def image_key(spec: ImageSpec) -> str:
    return content_key(spec.key_data())


def image_path(spec: ImageSpec) -> Path:
    return cache_dir("images") / f"{spec.release}-{spec.bios}-{image_key(spec)[:24]}.qcow2"


def lock_path(image: Path) -> Path:
    """The lock a build of *image* holds: builds of one image never overlap, and pruning skips an image
    while its build runs."""
    return image.with_name(f".{image.stem}.lock")


def build_golden_image(spec: ImageSpec, *, refresh: bool = False,
                       progress: Progress = NullProgress()) -> GoldenImage:
    """The cached image for *spec*, built first when there is none.

    ``refresh`` builds it again from the mirror's current packages (security updates) even when one is
    cached. Builds are reproducible, so when no package changed the new image has the same bytes and the
    cached file is kept untouched; otherwise the new image replaces it by rename, so VMs and staged copies
    that hold the old file (hard links, open files) keep their bytes.
    """
    key = image_key(spec)
    final = image_path(spec)
    if final.exists() and not refresh:
        progress.step(f"image: reusing {final.name}")
        return GoldenImage(final, key, cached=True, manifest=package_manifest(spec, final, progress))
    _require_build_environment(spec)
    with exclusive_lock(lock_path(final)):
        # (the image's lock is held from here on: manifests are read with _manifest_or_recover, which does
        # not take it again; flock would wait for ourselves)
        if final.exists() and not refresh:  # another process finished it while we waited
            return GoldenImage(final, key, cached=True, manifest=_manifest_or_recover(spec, final, progress))
        previous = _manifest_or_recover(spec, final, progress) if final.exists() else None
        _remove_stale_builds(final)
        work = Path(tempfile.mkdtemp(prefix=f".build-{final.stem}-", dir=final.parent))
        try:
            qcow, manifest = _build(spec, key, work, final, progress)
            identical = final.exists() and sha256_file(qcow) == cached_sha256(final)
            if identical:
                progress.step("image: the rebuilt image is byte-identical to the cached one; keeping the cached file")
                write_manifest(final, manifest)
            else:
                _install(qcow, final, manifest)
        except BaseException:  # failed or interrupted: what cannot go now, the next build removes
            with contextlib.suppress(ImgbuildError, OSError):
                remove_tree(work)
            raise
        remove_tree(work)
    return GoldenImage(final, key, cached=False, manifest=manifest, previous=previous, identical=identical)


def _install(qcow: Path, final: Path, manifest: Manifest) -> None:
    """Put a finished build in place of the cached image."""
    os.chmod(qcow, 0o444)  # a golden image is only ever a backing file
    # The package manifest follows the image it describes: the old one goes first, the new one is written
    # after the rename, so a crash in between leaves an image without a manifest (recovered from its disk
    # on next use), never a manifest of other packages.
    manifest_path(final).unlink(missing_ok=True)
    os.replace(qcow, final)  # the qcow2 under its final name means the build finished
    write_manifest(final, manifest)


def package_manifest(spec: ImageSpec, image: Path, progress: Progress = NullProgress()) -> Manifest | None:
    """The package manifest beside the cached *image*; an image cached before imgbuild wrote manifests gets
    one read out of its disk (once, a few seconds, no boot). None, with a warning, when that fails too."""
    manifest = read_manifest(image)
    if manifest is not None:
        return manifest
    with exclusive_lock(lock_path(image)):  # a crashed reader's work directory is a stale build's
        return _manifest_or_recover(spec, image, progress)


def _manifest_or_recover(spec: ImageSpec, image: Path, progress: Progress) -> Manifest | None:
    """package_manifest() for a caller that holds the image's lock already."""
    manifest = read_manifest(image)  # another process may have read it out while we waited
    if manifest is not None:
        return manifest
    progress.step(f"image: {image.name} has no package manifest (cached before imgbuild wrote them); "
                  "reading its dpkg database from the disk")
    work = Path(tempfile.mkdtemp(prefix=f".build-{image.stem}-", dir=image.parent))
    try:
        return recover_manifest(image, image_key=image_key(spec), release=spec.release,
                                requested=package_set(spec), workdir=work)
    except ImgbuildError as exc:
        progress.note(f"warning: no package manifest for {image.name}: {exc.message}")
        return None
    finally:
        remove_tree(work)


def _require_build_environment(spec: ImageSpec) -> None:
    if os.geteuid() != 0:
        raise ImgbuildError(
            "building a golden image needs root: mmdebstrap installs the packages into a chroot (root mode) "
            "and the image's filesystem must hold root-owned files",
            detail="run imgbuild as root (sudo), or use a target/recipe whose golden image is already cached",
        )
    require_tool("mmdebstrap", "mmdebstrap")
    require_tool("chroot", "coreutils")
    require_tool("mkfs.ext4", "e2fsprogs")
    require_tool("sfdisk", "fdisk")
    require_tool("qemu-img", "qemu-utils")
    if spec.bios == "ovmf":
        require_tool("mkfs.vfat", "dosfstools")
        require_tool("mcopy", "mtools")


def _build(spec: ImageSpec, key: str, work: Path, final: Path, progress: Progress) -> tuple[Path, Manifest]:
    """Build the image for *spec* in *work*: the qcow2 (not yet in place) and its package manifest."""
    timings: dict[str, float] = {}
    root = work / "root"

    t = time.monotonic()
    progress.step(f"image: bootstrapping {spec.release} ({variant(spec)} + {len(package_set(spec))} packages)")
    _bootstrap.bootstrap(spec, root, epoch=reproducible.BOOTSTRAP_EPOCH, progress=progress)
    packages = manifest_of_root(root, image_key=key, release=spec.release, requested=package_set(spec))
    timings["bootstrap"] = time.monotonic() - t

    t = time.monotonic()
    epoch = reproducible.source_date_epoch(root, packages.packages)
    ids = disk_ids(spec, key, epoch)
    info = BootInfo(
        bios=spec.bios,
        root_uuid=ids.root_uuid,
        kernel_version=kernel_version(root),
        release=spec.release,
        esp_uuid=ids.esp_serial,
    )
    boot = configure_rootfs(root, info, spec, epoch=epoch, progress=progress)
    _keep_kernel(root / "boot" / f"vmlinuz-{info.kernel_version}")
    reproducible.clamp_times(root, epoch)
    timings["configure"] = time.monotonic() - t

    t = time.monotonic()
    progress.step("image: writing filesystem and partition table")
    raw = work / "disk.raw"
    layout = layout_for(spec.bios, spec.disk_size)
    repro = mke2fs_reproducible()
    if not repro:
        progress.note("warning: this mke2fs (e2fsprogs before 1.47.1) writes the build's clock into every inode: "
                      "the image will not be byte-identical to another build of the same packages "
                      "(on Debian 12, install e2fsprogs from bookworm-backports; scripts/bootstrap does)")
    assemble_disk(raw, root, layout, boot, ids)
    timings["assemble"] = time.monotonic() - t

    t = time.monotonic()
    progress.step("image: converting to qcow2")
    qcow = work / "disk.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, qcow])
    raw.unlink()
    timings["convert"] = time.monotonic() - t

    info_json = {
        "key": key,
        "spec": spec.key_data(),
        "packages": package_set(spec),
        "kernel": info.kernel_version,
        "root_uuid": info.root_uuid,
        "esp_uuid": info.esp_uuid,
        "source_date_epoch": epoch,
        "reproducible": repro,
        "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "timings": {k: round(v, 1) for k, v in timings.items()},
    }
    write_atomic(final.with_suffix(".json"), json.dumps(info_json, indent=2, sort_keys=True) + "\n")
    progress.note(f"image: built {final.name} ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}; "
                  f"{len(packages.packages)} packages, SOURCE_DATE_EPOCH {epoch})")
    return qcow, packages


def disk_ids(spec: ImageSpec, key: str, epoch: int) -> DiskIds:
    """Every identifier of the image's disk, derived from its key: the same for every build of *spec*."""
    gpt = spec.bios == "ovmf"
    return DiskIds(
        epoch=epoch,
        root_uuid=reproducible.derived_uuid(key, "root-fs"),
        hash_seed=reproducible.derived_uuid(key, "root-fs-hash-seed"),
        label_id=reproducible.derived_uuid(key, "gpt-disk") if gpt else reproducible.mbr_label_id(key),
        esp_serial=reproducible.esp_serial(key) if gpt else None,
        partition_uuids=(reproducible.derived_uuid(key, "gpt-esp"), reproducible.derived_uuid(key, "gpt-root"))
        if gpt else (),
    )


def image_manifest(image: GoldenImage) -> dict:
    """The JSON written beside a golden image (kernel, root UUID, timings of its build)."""
    return json.loads(image.path.with_suffix(".json").read_text())


def _keep_kernel(vmlinuz: Path) -> None:
    """Keep a copy of the image's kernel: the local target's KVM probe boots it (targets.local.accel)."""
    dest = cache_dir("kernels") / vmlinuz.name
    if not dest.exists():
        with atomic_output(dest) as fh, open(vmlinuz, "rb") as src:
            shutil.copyfileobj(src, fh)


def _remove_stale_builds(final: Path) -> None:
    """Work directories that crashed builds left behind. Ours: we hold its lock, so none is live.
    Other images': only when their lock is free (no build of that image is running)."""
    for stale in final.parent.glob(".build-*"):
        stem = stale.name.removeprefix(".build-").rsplit("-", 1)[0]
        if stem == final.stem:
            log.info("removing stale build directory %s", stale)
            remove_tree(stale)
            continue
        lock = lock_path(final.with_name(f"{stem}.qcow2"))
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # that image is being built right now
        else:
            try:
                log.info("removing stale build directory %s", stale)
                remove_tree(stale)
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _mounts_under(path: Path) -> list[str]:
    prefix = str(path.resolve()).rstrip("/") + "/"
    found = []
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            mountpoint = line.split()[4].encode().decode("unicode_escape")
            if mountpoint.startswith(prefix):
                found.append(mountpoint)
    return sorted(found, key=len, reverse=True)


def remove_tree(path: Path) -> None:
    """rmtree that first unmounts anything a killed mmdebstrap left mounted inside (never deletes through
    a bind mount of the host's /dev or /proc)."""
    if not path.exists():
        return
    for mountpoint in _mounts_under(path):
        run(["umount", "--lazy", mountpoint], check=False)
    left = _mounts_under(path)
    if left:
        raise ImgbuildError(f"cannot remove {path}: still mounted inside: {', '.join(left)}")
    try:
        shutil.rmtree(path)
    except OSError as exc:
        raise ImgbuildError(f"cannot remove {path}: {exc.strerror or exc}",
                            detail="the next image build removes it, or remove it yourself") from None
