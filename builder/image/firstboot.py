"""A first boot that does only what the recipe needs (pure: settings in, file text out).

What every first boot of a golden image recomputed is decided at build time instead, as the locale already
is: cloud-init runs only the modules imgbuild's seed uses (the rest cost Python imports and subprocesses
under TCG, and do nothing); sshd's password setting is baked in where the recipe decides it (cloud-init's
set_passwords module rewrote it and restarted sshd on every first boot); the time zone is set; the root
filesystem, which mke2fs has just made, is not checked on the first boot (later boots check it as usual);
with a fixed address nothing waits for the network to come "online"; /etc and /var are marked up to date
with /usr, so the units that refresh caches after an update of /usr (ldconfig, the journal catalog,
sysusers) do not repeat on the first boot what the package installation already did.
Each choice is proven by `systemd-analyze critical-chain` in the guest (bench/local.md).
"""

from __future__ import annotations

from dataclasses import dataclass

# What the seed imgbuild renders (builder/render/cloudinit.py) asks of each cloud-init stage. Every key of
# its user-data is handled by one of these modules, or baked into the image here (tests check both sides).
INIT_MODULES = (
    "write_files",  # identity files (keep-identity datasource list, NIC name) and the late-commands script
    "set_hostname",  # hostname, fqdn
    "update_hostname",
    "update_etc_hosts",  # manage_etc_hosts
    "users_groups",  # users
    "ssh",  # ssh_keys (the pinned host key), ssh_deletekeys, ssh_genkeytypes, disable_root
)
# runcmd writes the recipe's late commands as a script, scripts_user runs it: both find nothing to do in a
# recipe without late commands, and keeping them lets recipes that differ only there share one image.
CONFIG_MODULES = ("runcmd",)
FINAL_MODULES = ("scripts_user", "final_message")  # final_message: the console line that ends the first boot


@dataclass(frozen=True)
class FirstBoot:
    """What a recipe asks of its first boot, as far as the image is concerned."""

    root_password: bool = False  # chpasswd for root: cloud-init's set_passwords module
    ssh_password_auth: bool = False  # sshd accepts passwords (some account has one)
    static_network: bool = False  # the seed gives a fixed address: nothing need wait for the network


def masked_units(first_boot: FirstBoot) -> tuple[str, ...]:
    """Units the image masks. systemd-networkd-wait-online sits on the first boot's critical chain (cloud-init's
    network stage is ordered after it) and waits for an address DHCP may still have to give; a fixed address is
    configured by networkd as it starts, so with one there is nothing to wait for."""
    return ("systemd-networkd-wait-online.service",) if first_boot.static_network else ()


def cloud_modules(first_boot: FirstBoot) -> dict[str, tuple[str, ...]]:
    """The module list of each cloud-init stage."""
    # set_passwords also applies ssh_pwauth and restarts sshd (8 s of a first boot under TCG): only for the
    # root password it alone can set; sshd's setting is baked in (sshd_password_cfg).
    init = (*INIT_MODULES, "set_passwords") if first_boot.root_password else INIT_MODULES
    return {"cloud_init_modules": init, "cloud_config_modules": CONFIG_MODULES, "cloud_final_modules": FINAL_MODULES}


def cloud_modules_cfg(first_boot: FirstBoot) -> str:
    """cloud.cfg.d drop-in replacing Debian's module lists (cloud.cfg runs about 50 modules)."""
    lines = ["# Written by imgbuild: only the modules imgbuild's seed uses (builder/image/firstboot.py).",
             "# A seed that needs more (another cloud-init user-data) must list them here."]
    for stage, modules in cloud_modules(first_boot).items():
        lines.append(f"{stage}: [{', '.join(modules)}]")
    return "\n".join(lines) + "\n"


def sshd_password_cfg(first_boot: FirstBoot) -> str:
    """/etc/ssh/sshd_config.d drop-in: what cloud-init's ssh_pwauth would write on the first boot."""
    value = "yes" if first_boot.ssh_password_auth else "no"
    return (f"# Written by imgbuild: the recipe {'gives' if first_boot.ssh_password_auth else 'gives no'} "
            f"account a password.\nPasswordAuthentication {value}\n")


def fsck_root_dropin() -> str:
    """systemd-fsck-root.service drop-in: no check on the first boot, which finds the filesystem mke2fs just
    made; every later boot checks it as before. "Later" is told by cloud-init's instance link, which the
    first boot creates: systemd's ConditionFirstBoot cannot tell, since it treats the image's empty
    /etc/machine-id as "not a first boot" (machine-id(5); "uninitialized" would also run presets and
    systemd-firstboot's prompts)."""
    return ("# Written by imgbuild: the first boot of a golden image finds the filesystem mke2fs just made.\n"
            "[Unit]\nConditionPathExists=/var/lib/cloud/instance\n")


# The units with ConditionNeedsUpdate=/etc or /var (systemd.unit(5)) run when /usr is newer than these stamps.
UPDATE_STAMPS = ("/etc/.updated", "/var/.updated")


def update_done_stamp(epoch: int) -> str:
    """The file systemd-update-done writes (src/update-done/update-done.c), stamped with the image's time,
    which no file's modification time exceeds after clamping: /usr is never newer, so ldconfig.service,
    systemd-journal-catalog-update and systemd-sysusers, whose work the packages' maintainer scripts did
    at build time, are not run again on the first boot (each costs 1-2 s of CPU under TCG)."""
    return ("# This file was created by systemd-update-done. Its only \n"
            "# purpose is to hold a timestamp of the time this directory\n"
            "# was updated. See man:systemd-update-done.service(8).\n"
            f"TIMESTAMP_NSEC={epoch * 10**9}\n")
