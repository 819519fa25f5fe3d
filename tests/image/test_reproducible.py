"""Reproducible golden images, the parts that need no image build: the timestamp from the installed packages'
changelogs (checked against dpkg-parsechangelog), clamped file times, identifiers from the image key, and a
disk assembled twice from one tree with the real tools (mkfs.ext4, sfdisk, mkfs.vfat, mtools, GRUB, qemu-img)
giving the same bytes. The full build twice is tests/image/test_reproducible_build.py (boot-marked)."""

from __future__ import annotations

import json
import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from builder.cachedir import sha256_file
from builder.image import reproducible
from builder.image.build import disk_ids
from builder.image.configure import BootFiles, set_password_change_day
from builder.image.disk import MKE2FS_REPRODUCIBLE, assemble_disk, layout_for, mke2fs_reproducible, mke2fs_version
from builder.image.manifest import Package
from builder.image.spec import ImageSpec
from builder.proc import run

MiB = 1024 * 1024
HOST_DOCS = Path("/usr/share/doc")


def parsechangelog_timestamp(path: Path) -> int:
    """What dpkg's own parser says the newest entry's date is."""
    return int(run(["dpkg-parsechangelog", "-l", path, "-S", "Timestamp"]).stdout)


def test_identifiers_come_from_the_image_key() -> None:
    a, b = disk_ids(ImageSpec(), "key-a", 1), disk_ids(ImageSpec(), "key-b", 1)
    assert a == disk_ids(ImageSpec(), "key-a", 1)  # the same for every build of one key
    assert len({a.root_uuid, a.hash_seed, b.root_uuid, b.hash_seed}) == 4
    assert uuid.UUID(a.root_uuid).version == 4 and a.label_id.startswith("0x") and len(a.label_id) == 10
    efi = disk_ids(ImageSpec(bios="ovmf"), "key-a", 1)
    assert uuid.UUID(efi.label_id) and len(set(efi.partition_uuids)) == 2 and efi.esp_serial
    assert len(efi.esp_serial) == 9 and efi.esp_serial[4] == "-"
    assert reproducible.esp_serial("key-a") != reproducible.esp_serial("key-b")


@pytest.mark.parametrize("package", ["libc6", "openssh-client", "dpkg", "coreutils"])
def test_a_changelogs_newest_entry_is_read_as_dpkg_reads_it(package: str) -> None:
    (log,) = reproducible.changelogs(Path("/"), package)  # dpkg is native: changelog.gz, no changelog.Debian.gz
    assert reproducible.changelog_date(log) == parsechangelog_timestamp(log)


def test_the_timestamp_is_the_newest_changelog_among_the_installed_packages(tmp_path: Path) -> None:
    root = tmp_path / "root"
    chosen = ["libc6", "dpkg", "adduser"]
    for name in chosen:
        shutil.copytree(HOST_DOCS / name, root / "usr/share/doc" / name, symlinks=True)
    shutil.copytree(HOST_DOCS / "openssh-client", root / "usr/share/doc/not-installed")  # not in the set
    packages = [Package(n, "1", "amd64", n) for n in chosen]
    expected = max(parsechangelog_timestamp(p) for n in chosen for p in reproducible.changelogs(root, n))
    assert reproducible.source_date_epoch(root, packages) == expected
    # a binNMU's own changelog counts too (its entry is newer than the source's)
    binnmu = root / "usr/share/doc/adduser/changelog.Debian.amd64.gz"
    shutil.copy(HOST_DOCS / "libc6/changelog.Debian.gz", binnmu)
    assert reproducible.changelogs(root, "adduser")[-1] == binnmu


def test_file_times_are_clamped_to_the_timestamp(tmp_path: Path) -> None:
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    old, new = root / "etc/old", root / "etc/new"
    old.write_text("from a package")
    new.write_text("written by the build")
    os.utime(old, (1_000_000_000, 900_000_000))
    (root / "etc/link").symlink_to("/nonexistent")
    epoch = 1_700_000_000
    assert reproducible.clamp_times(root, epoch) >= 3
    assert os.stat(old).st_mtime == 900_000_000 and os.stat(old).st_atime == 900_000_000  # atime = mtime
    assert os.stat(new).st_mtime == epoch and os.lstat(root / "etc/link").st_mtime == epoch
    reproducible.clamp_times(root, epoch)
    assert os.stat(new).st_mtime == epoch and os.stat(new).st_atime == epoch  # a second pass changes no file


def test_accounts_carry_the_images_day_not_the_build_day(tmp_path: Path) -> None:
    (tmp_path / "etc").mkdir()
    shadow = tmp_path / "etc/shadow"
    shadow.write_text("root:*:19000:0:99999:7:::\n_apt:*:20400:0:99999:7:::\nnobody:*::::::\n")
    shadow.chmod(0o640)
    set_password_change_day(tmp_path, 1_700_000_000)
    assert shadow.read_text() == "root:*:19675:0:99999:7:::\n_apt:*:19675:0:99999:7:::\nnobody:*::::::\n"
    assert shadow.stat().st_mode & 0o777 == 0o640


def test_this_hosts_mke2fs_can_build_reproducible_images() -> None:
    # Debian 12's e2fsprogs 1.47.0 cannot; scripts/bootstrap installs 1.47.2 from bookworm-backports.
    assert mke2fs_reproducible(), f"mke2fs {mke2fs_version()} is older than {MKE2FS_REPRODUCIBLE}"


def grub_boot_files(tmp_path: Path, bios: str) -> BootFiles:
    """GRUB images made by this host's GRUB, as configure_rootfs makes them in the image's root."""
    if bios == "seabios":
        core = tmp_path / "core.img"
        run(["grub-mkimage", "-O", "i386-pc", "-o", core, "-p", "(hd0,msdos1)/boot/grub", "biosdisk", "part_msdos",
             "ext2", "normal"])
        return BootFiles(boot_img=Path("/usr/lib/grub/i386-pc/boot.img"), core_img=core)
    core = tmp_path / "bootx64.efi"
    run(["grub-mkimage", "-O", "x86_64-efi", "-o", core, "-p", "/boot/grub", "part_gpt", "fat", "ext2", "normal"])
    os.utime(core, (1_600_000_000, 1_600_000_000))
    return BootFiles(boot_img=None, core_img=core)


def a_root(where: Path) -> Path:
    """A small tree with what makes mkfs -d differ between runs: times, many directory entries, links."""
    root = where / "root"
    for d in range(20):
        for f in range(30):
            path = root / f"usr/share/d{d}/f{f}"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(f"{d}/{f}\n" * (f + 1))
    (root / "etc").mkdir()
    (root / "etc/hostname").write_text("debian\n")
    (root / "etc/resolv.conf").symlink_to("../run/systemd/resolve/stub-resolv.conf")
    reproducible.clamp_times(root, 1_700_000_000)
    return root


@pytest.mark.parametrize("bios", ["seabios", "ovmf"])
def test_the_same_tree_assembles_to_the_same_bytes(tmp_path: Path, bios: str) -> None:
    spec = ImageSpec(bios=bios)
    layout = layout_for(bios, 200 * MiB)  # small: the bytes are hashed whole
    images = []
    for n, key in enumerate(("key-a", "key-a", "key-b")):
        work = tmp_path / f"build{n}"
        work.mkdir()
        root = a_root(work)  # written anew each time: other change times, other inode numbers on the host
        raw = work / "disk.raw"
        assemble_disk(raw, root, layout, grub_boot_files(work, bios), disk_ids(spec, key, 1_700_000_000))
        qcow = work / "disk.qcow2"
        run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", "-o", "cluster_size=65536", raw, qcow])
        images.append((sha256_file(raw), sha256_file(qcow), raw))
        time.sleep(1.1)  # the next build runs at another second of the clock
    assert images[0][:2] == images[1][:2], "two assemblies of one tree differ"
    assert images[0][0] != images[2][0], "another image key gave the same disk"
    table = json.loads(run(["sfdisk", "--json", images[0][2]]).stdout)["partitiontable"]
    ids = disk_ids(spec, "key-a", 1_700_000_000)
    if bios == "seabios":
        assert table["id"] == ids.label_id
    else:
        assert table["id"].lower() == ids.label_id
        assert [p["uuid"].lower() for p in table["partitions"]] == list(ids.partition_uuids)
    root_start = layout.root.start
    probe = run(["blkid", "-p", "-O", str(root_start), "-o", "export", images[0][2]]).stdout.decode()
    assert f"UUID={ids.root_uuid}" in probe
    super_block = run(["debugfs", "-R", "stats", f"{images[0][2]}?offset={root_start}"]).stdout.decode()
    assert f"Directory Hash Seed:      {ids.hash_seed}" in super_block
    assert "Filesystem created:       Tue Nov 14 22:13:20 2023" in super_block  # the epoch, not the clock
    features = next(line for line in super_block.splitlines() if line.startswith("Filesystem features:"))
    assert "metadata_csum_seed" not in features and "orphan_file" not in features and "metadata_csum" in features
