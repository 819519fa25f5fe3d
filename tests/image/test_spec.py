"""Golden image inputs, cache keys and the pure parts of assembly (no root, no network)."""

from __future__ import annotations

import pytest

from builder.errors import ImgbuildError, InvalidInput
from builder.image import ImageSpec, image_key, package_set, task_packages, variant
from builder.image import build as build_mod
from builder.image.bootconfig import BootInfo, cloud_cfg, fstab, grub_cfg
from builder.image.bootstrap import mmdebstrap_argv
from builder.image.configure import locale_gen_line
from builder.image.disk import MiB, layout_for, sfdisk_script


def test_tasks_map_to_task_packages_and_standard_to_the_variant() -> None:
    spec = ImageSpec(tasks=("web-server", "ssh-server", "standard"))
    assert task_packages(spec.tasks) == ["task-ssh-server", "task-web-server"]
    assert variant(spec) == "standard"
    assert variant(ImageSpec(tasks=("lxde-desktop",))) == "important"
    pkgs = package_set(spec)
    for needed in ("linux-image-amd64", "grub-pc", "qemu-guest-agent", "cloud-init", "openssh-server", "dbus",
                   "systemd-sysv", "task-web-server"):  # fmt: skip
        assert needed in pkgs
    assert "grub-efi-amd64" in package_set(ImageSpec(bios="ovmf")) and "grub-pc" not in package_set(ImageSpec(bios="ovmf"))


def test_cache_key_follows_content_not_order_or_proxy() -> None:
    a = ImageSpec(tasks=("web-server", "standard"), packages=("vim", "curl"))
    b = ImageSpec(tasks=("standard", "web-server"), packages=("curl", "vim"), proxy="http://127.0.0.1:3142")
    assert image_key(a) == image_key(b)
    assert image_key(a) != image_key(ImageSpec(tasks=("standard",), packages=("curl", "vim")))
    assert image_key(a) != image_key(ImageSpec(tasks=("web-server", "standard"), packages=("vim", "curl"), bios="ovmf"))
    assert "builder" in a.key_data()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"release": "sid"}, "release 'sid'"),
        ({"tasks": ("Web Server",)}, "task 'Web Server'"),
        ({"packages": ("bad pkg",)}, "package 'bad pkg'"),
        ({"disk_size": 1024**3}, "below the 2 GiB"),
        ({"bios": "uefi"}, "bios 'uefi'"),
        ({"mirror": "ftp://x"}, "mirror"),
        ({"locale": "en_US.UTF-8\nfoo"}, "locale"),
    ],
)
def test_invalid_specs_are_rejected_with_the_field(kwargs: dict, message: str) -> None:
    with pytest.raises(InvalidInput, match=message):
        ImageSpec(**kwargs)


def test_mmdebstrap_argv_caches_debs_and_keeps_the_proxy_out_of_the_key(tmp_path) -> None:
    spec = ImageSpec(tasks=("ssh-server",), proxy="http://127.0.0.1:3142")
    argv = mmdebstrap_argv(spec, tmp_path / "root", tmp_path / "debs")
    assert "--mode=root" in argv and "--variant=important" in argv and "--skip=essential/unlink" in argv
    assert f"--setup-hook=sync-in {tmp_path / 'debs'} /var/cache/apt/archives/" in argv
    assert f"--customize-hook=sync-out /var/cache/apt/archives {tmp_path / 'debs'}" in argv
    assert '--aptopt=Acquire::http::Proxy "http://127.0.0.1:3142"' in argv
    assert argv[-3:] == ["trixie", str(tmp_path / "root"), "http://deb.debian.org/debian"]


def test_boot_config_has_serial_console_and_no_menu_wait() -> None:
    info = BootInfo("seabios", "11111111-2222-3333-4444-555555555555", "6.12.0-1-amd64", "trixie")
    cfg = grub_cfg(info)
    assert "terminal_output serial console" in cfg and "set timeout=0" in cfg
    assert "console=tty0 console=ttyS0,115200" in cfg
    assert "root=UUID=11111111-2222-3333-4444-555555555555" in cfg and "part_msdos" in cfg
    assert "/boot/efi" not in fstab(info)
    efi = BootInfo("ovmf", info.root_uuid, info.kernel_version, "trixie", esp_uuid="ABCD-1234")
    assert "part_gpt" in grub_cfg(efi) and "UUID=ABCD-1234 /boot/efi vfat" in fstab(efi)
    assert "datasource_list: [ NoCloud, None ]" in cloud_cfg()


def test_disk_layouts() -> None:
    bios = layout_for("seabios", 8192 * MiB)
    assert bios.root.start == MiB and bios.root.size == 8191 * MiB and bios.esp is None
    assert sfdisk_script(bios) == "label: dos\nstart=2048, size=16775168, type=83, bootable\n"
    efi = layout_for("ovmf", 8192 * MiB)
    assert efi.esp is not None and efi.esp.start == MiB and efi.root.start == efi.esp.start + efi.esp.size
    assert efi.root.start + efi.root.size <= 8192 * MiB - MiB  # room for the backup GPT
    assert sfdisk_script(efi).startswith("label: gpt\n")


def test_building_without_root_says_root_is_needed(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path))
    monkeypatch.setattr(build_mod.os, "geteuid", lambda: 1000)
    with pytest.raises(ImgbuildError, match="needs root"):
        build_mod.build_golden_image(ImageSpec(tasks=("ssh-server",)))


def test_the_locale_is_part_of_the_key_and_found_in_debians_list() -> None:
    assert image_key(ImageSpec(locale="de_DE.UTF-8")) != image_key(ImageSpec())
    supported = "de_DE.UTF-8 UTF-8\nde_DE ISO-8859-1\nde_DE@euro ISO-8859-15\nen_US.UTF-8 UTF-8\n"
    assert locale_gen_line("de_DE", supported) == "de_DE ISO-8859-1"
    assert locale_gen_line("de_DE@euro", supported) == "de_DE@euro ISO-8859-15"
    assert locale_gen_line("en_US.UTF-8", supported) == "en_US.UTF-8 UTF-8"
    with pytest.raises(ImgbuildError, match="xx_XX.UTF-8 is not one Debian's locales package can build"):
        locale_gen_line("xx_XX.UTF-8", supported)


def test_the_keyboard_is_part_of_the_key_and_brings_the_console_keymap_tools() -> None:
    from builder.image.bootconfig import default_keyboard

    assert image_key(ImageSpec(keyboard="de")) != image_key(ImageSpec())
    assert "console-setup" in package_set(ImageSpec(keyboard="de"))
    assert "console-setup" not in package_set(ImageSpec())  # the kernel's built-in layout is US
    text = default_keyboard("de(nodeadkeys)")
    assert 'XKBLAYOUT="de"\n' in text and 'XKBVARIANT="nodeadkeys"\n' in text and 'XKBMODEL="pc105"\n' in text
    with pytest.raises(InvalidInput, match="not a keyboard layout"):
        ImageSpec(keyboard="de; rm -rf /")


def test_a_layout_xkb_data_does_not_know_is_refused(tmp_path) -> None:
    from pathlib import Path

    from builder.image.configure import configure_keyboard

    rules = tmp_path / "usr/share/X11/xkb/rules"
    rules.mkdir(parents=True)
    (rules / "base.lst").write_text(Path("/usr/share/X11/xkb/rules/base.lst").read_text())  # xkb-data's own list
    with pytest.raises(ImgbuildError, match="keyboard layout 'xx' is not one xkb-data knows"):
        configure_keyboard(tmp_path, "xx", {}, 1_700_000_000)
    configure_keyboard(tmp_path, "us", {}, 1_700_000_000)  # nothing to do for the built-in layout
    assert not (tmp_path / "etc/default/keyboard").exists()


def test_the_time_zone_is_part_of_the_key_and_must_be_a_tz_name() -> None:
    assert image_key(ImageSpec(timezone="Europe/Berlin")) != image_key(ImageSpec())
    for bad in ("../../etc/passwd", "Europe/Ber lin", ""):
        with pytest.raises(InvalidInput, match="time zone"):
            ImageSpec(timezone=bad)
