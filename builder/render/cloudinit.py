"""cloud-init NoCloud seed: user-data, meta-data and network-config (version 2), built as data."""

from __future__ import annotations

import hashlib
from typing import Any

from builder.recipe.model import Recipe
from builder.render.inputs import RenderInputs
from builder.render.late_script import LATE_COMMANDS, LATE_DONE, user_commands_script
from builder.render.yamlout import dump_yaml

NIC_NAME = "eth0"


def user_data(recipe: Recipe, inputs: RenderInputs) -> dict[str, Any]:
    users: list[Any] = []
    any_password = False
    for user in recipe.users:
        hashed = inputs.password_hashes.get(user.name)
        any_password |= hashed is not None
        entry: dict[str, Any] = {"name": user.name}
        if user.full_name:
            entry["gecos"] = user.full_name
        entry["shell"] = user.shell
        if user.sudo:
            entry["groups"] = ["sudo"]
            if hashed is None:
                entry["sudo"] = "ALL=(ALL) NOPASSWD:ALL"
        entry["lock_passwd"] = hashed is None
        if hashed is not None:
            entry["hashed_passwd"] = hashed
        keys = inputs.keys_for(user.name, user.ssh_keys)
        if keys:
            entry["ssh_authorized_keys"] = list(keys)
        users.append(entry)
    data: dict[str, Any] = {
        "hostname": recipe.hostname,
        "fqdn": recipe.fqdn,
        "prefer_fqdn_over_hostname": False,
        "manage_etc_hosts": True,
        "locale": recipe.locale,
        "timezone": recipe.timezone,
        "users": users,
        "disable_root": not recipe.root.login,
        "ssh_pwauth": any_password or (recipe.root.login and inputs.root_hash is not None),
        "ssh_deletekeys": True,
        "ssh_genkeytypes": ["ed25519"],  # the one type we deliver; nothing else is generated
        "ssh_keys": {
            "ed25519_private": inputs.host_key.private_openssh,
            "ed25519_public": inputs.host_key.public_line,
        },
        "package_update": False,
        "package_upgrade": False,
    }
    # The locale is already generated and the default: golden images are built with it (builder/image)
    # and the installer sets it from the preseed, so cloud-init's locale module has nothing to do.
    files: list[dict[str, Any]] = [*identity_files(recipe), *autologin_files(recipe)]
    if recipe.root.login and inputs.root_hash:
        data["chpasswd"] = {"expire": False, "users": [{"name": "root", "password": inputs.root_hash, "type": "hash"}]}
    if recipe.late_commands:
        files.append({
            "path": LATE_COMMANDS,
            "permissions": "0755",
            "owner": "root:root",
            "content": user_commands_script(recipe),
        })
        data["runcmd"] = [[
            "sh", "-c",
            f"test -e {LATE_DONE} || {{ sh -e {LATE_COMMANDS} && touch {LATE_DONE}; }}",
        ]]
    data["write_files"] = files
    data["final_message"] = f"imgbuild: {recipe.name} is up after $UPTIME seconds (cloud-init $VERSION)"
    return data


def identity_files(recipe: Recipe) -> list[dict[str, Any]]:
    """Keep the guest's identity once the seed ISO is gone (imgbuild removes it after verification, since it
    holds the host's private key): without these, the next boot falls back to cloud-init's "None"
    datasource, which makes a new instance with new host keys and a DHCP address."""
    link = (f"# written by imgbuild: the NIC keeps the name cloud-init gave it, with or without cloud-init\n"
            f"[Match]\nMACAddress={recipe.network.mac.lower()}\n\n[Link]\nName={NIC_NAME}\n")
    return [
        {"path": "/etc/cloud/cloud.cfg.d/99-imgbuild-keep-identity.cfg",
         # Two real datasources, not one: ds-identify uses a single listed datasource (optionally with None)
         # unchecked, so cloud-init would run, find no seed and fall back to DHCP. With two, a boot without
         # any seed leaves cloud-init disabled; a new seed (a clone's) is still found.
         "content": "# written by imgbuild: a boot without a seed changes nothing; a new seed is still found\n"
                    "datasource_list: [NoCloud, ConfigDrive]\n"},
        {"path": f"/etc/systemd/network/10-imgbuild-{NIC_NAME}.link", "content": link},
    ]


AUTOLOGIN_CONF = "/etc/lightdm/lightdm.conf.d/50-imgbuild-autologin.conf"


def autologin_files(recipe: Recipe) -> list[dict[str, Any]]:
    """lightdm starts the recipe's desktop session for ``desktop.autologin`` at boot, without a greeter.
    cloud-init writes it in its init stage, which systemd orders before systemd-user-sessions and so before
    the display manager starts.

    The X server runs without its screen saver and DPMS (``-s 0 -dpms``): LXDE's light-locker locks the
    session when the screen saver starts (after 10 idle minutes), and a key-only account has no password to
    unlock it with; the session would be lost to a greeter nobody can pass."""
    desktop = recipe.desktop
    if desktop.autologin is None or desktop.session is None:
        return []
    conf = (f"# written by imgbuild: desktop.autologin of recipe {recipe.name}\n"
            f"[Seat:*]\nautologin-user={desktop.autologin}\nautologin-user-timeout=0\n"
            f"autologin-session={desktop.session.name}\nxserver-command=X -s 0 -dpms\n")
    return [{"path": AUTOLOGIN_CONF, "content": conf}]


def network_config(recipe: Recipe) -> dict[str, Any]:
    net = recipe.network
    nic: dict[str, Any] = {"match": {"macaddress": net.mac.lower()}, "set-name": NIC_NAME}
    if net.is_static:
        nic["dhcp4"] = False
        nic["addresses"] = [net.address]
        if net.gateway:
            # Not `to: default`: cloud-init 22.4 and 25.1 reject it (see FACTS.md).
            nic["routes"] = [{"to": "0.0.0.0/0", "via": net.gateway}]
    else:
        nic["dhcp4"] = True
    ns: dict[str, Any] = {}
    if net.nameservers:
        ns["addresses"] = list(net.nameservers)
    if net.search:
        ns["search"] = list(net.search)
    if ns:
        nic["nameservers"] = ns
    return {"version": 2, "ethernets": {NIC_NAME: nic}}


def render_user_data(recipe: Recipe, inputs: RenderInputs) -> str:
    return dump_yaml(user_data(recipe, inputs), header="#cloud-config\n")


def render_network_config(recipe: Recipe) -> str:
    return dump_yaml(network_config(recipe))


def instance_id(*seed_texts: str) -> str:
    digest = hashlib.sha256("\0".join(seed_texts).encode()).hexdigest()
    return f"iid-imgbuild-{digest[:16]}"


def render_meta_data(recipe: Recipe, user_data_text: str, network_config_text: str) -> str:
    return dump_yaml({
        "instance-id": instance_id(user_data_text, network_config_text),
        "local-hostname": recipe.hostname,
    })
