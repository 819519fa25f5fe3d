"""Build the golden web-server image (mmdebstrap; about a minute and a half on a fresh machine) and check
its disk: partition table, boot code, the kernel, GRUB on the serial console, cloud-init, the guest
agent and apache2; no identity baked in; and that an unchanged spec is reused without mmdebstrap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from builder.image import GoldenImage, build_golden_image, image_manifest, read_manifest
from builder.image import bootstrap as bootstrap_mod
from builder.image.manifest import query_admindir
from builder.proc import run
from tests.image.conftest import WEB_SPEC

pytestmark = pytest.mark.boot

ROOT_OFFSET = 1024 * 1024


def debugfs(raw: Path, request: str) -> str:
    proc = run(["debugfs", "-R", request, f"{raw}?offset={ROOT_OFFSET}"], check=False)
    return proc.stdout.decode("utf-8", "replace") + proc.stderr.decode("utf-8", "replace")


def exists(raw: Path, path: str) -> bool:
    return "File not found" not in debugfs(raw, f"stat {path}")


def test_image_is_a_qcow2_of_the_spec_size(web_image: GoldenImage) -> None:
    info = json.loads(run(["qemu-img", "info", "--output=json", "-U", web_image.path]).stdout)
    assert info["format"] == "qcow2"
    assert info["virtual-size"] == WEB_SPEC.disk_size
    manifest = image_manifest(web_image)
    assert manifest["key"] == web_image.key and "task-web-server" in manifest["packages"]


def test_partition_table_and_boot_code(web_raw: Path) -> None:
    table = json.loads(run(["sfdisk", "--json", web_raw]).stdout)["partitiontable"]
    assert table["label"] == "dos"
    (part,) = table["partitions"]
    assert part["start"] == 2048 and part["type"] == "83" and part.get("bootable") is True
    with open(web_raw, "rb") as fh:
        head = fh.read(ROOT_OFFSET)
    assert head[510:512] == b"\x55\xaa"
    assert any(head[:440]), "no boot code in the MBR"
    assert any(head[512:1024]), "no GRUB core image after the MBR"


def test_filesystem_holds_kernel_grub_cloud_init_agent_and_apache(web_raw: Path, web_image: GoldenImage) -> None:
    kernel = image_manifest(web_image)["kernel"]
    for path in (
        f"/boot/vmlinuz-{kernel}", f"/boot/initrd.img-{kernel}", "/boot/grub/i386-pc/normal.mod",
        "/usr/bin/cloud-init", "/usr/sbin/qemu-ga", "/usr/sbin/apache2", "/usr/sbin/sshd",
        "/usr/bin/dbus-daemon", "/etc/systemd/system/multi-user.target.wants/systemd-networkd.service",
    ):  # fmt: skip
        assert exists(web_raw, path), path
    grub = debugfs(web_raw, "cat /boot/grub/grub.cfg")
    assert "terminal_output serial console" in grub
    assert "console=tty0 console=ttyS0,115200" in grub
    assert f"vmlinuz-{kernel}" in grub
    assert "NoCloud" in debugfs(web_raw, "cat /etc/cloud/cloud.cfg.d/90_imgbuild.cfg")


def test_the_recipes_locale_is_generated_and_the_default(web_raw: Path) -> None:
    # So cloud-init's locale module skips locale-gen on first boot (32 s under TCG).
    # trixie: /etc/locale.conf, which systemd-tmpfiles links /etc/default/locale to at boot (cloud-init reads that)
    assert "LANG=en_US.UTF-8" in debugfs(web_raw, "cat /etc/locale.conf")
    assert "\nen_US.UTF-8 UTF-8\n" in debugfs(web_raw, "cat /etc/locale.gen")
    assert exists(web_raw, "/usr/lib/locale/locale-archive")


def test_the_package_manifest_is_what_the_image_has_installed(web_image: GoldenImage, web_raw: Path,
                                                               tmp_path: Path) -> None:
    manifest = read_manifest(web_image.path)
    assert manifest is not None and manifest == web_image.manifest and manifest.image_key == web_image.key
    assert "task-web-server" in manifest.requested and manifest.release == "trixie"
    packages = {p.name: p for p in manifest.packages}
    kernel = image_manifest(web_image)["kernel"]
    assert packages[f"linux-image-{kernel}"].source.startswith("linux")
    assert packages["openssh-server"].source == "openssh" and packages["apache2"].arch == "amd64"
    assert "grub-pc" in packages and "cloud-init" in packages
    # The same list dpkg reads from the image's own disk.
    status = run(["debugfs", "-R", "cat /var/lib/dpkg/status", f"{web_raw}?offset={ROOT_OFFSET}"]).stdout
    (tmp_path / "updates").mkdir()
    (tmp_path / "status").write_bytes(status)
    assert manifest.packages == query_admindir(tmp_path)


def test_no_identity_is_baked_in(web_raw: Path) -> None:
    listing = debugfs(web_raw, "ls /etc/ssh")
    assert "ssh_host_" not in listing
    assert exists(web_raw, "/etc/machine-id")
    assert run(["debugfs", "-R", "cat /etc/machine-id", f"{web_raw}?offset={ROOT_OFFSET}"]).stdout == b""
    assert "Acquire::http::Proxy" not in debugfs(web_raw, "cat /etc/apt/apt.conf.d/99mmdebstrap")
    assert ".deb" not in debugfs(web_raw, "ls /var/cache/apt/archives")
    assert "instances" not in debugfs(web_raw, "ls /var/lib/cloud")


def test_unchanged_spec_is_reused_without_mmdebstrap(web_image: GoldenImage, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_bootstrap(*args: object, **kwargs: object) -> None:
        raise AssertionError("mmdebstrap ran for an unchanged spec")

    monkeypatch.setattr(bootstrap_mod, "bootstrap", no_bootstrap)
    again = build_golden_image(WEB_SPEC)
    assert again.cached is True
    assert again.path == web_image.path and again.key == web_image.key
