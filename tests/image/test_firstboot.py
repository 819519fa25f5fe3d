"""The trimmed first boot, checked against what the seed really asks for: every key of the user-data imgbuild
renders is handled by a cloud-init module the image keeps (by cloud-init's own schema, which names the
module of each key), or is baked into the image. The guest side (what ran, what the critical chain lost) is
proven on the booted web-server in tests/pipeline/test_make_web_server.py."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.image.firstboot import (
    FirstBoot,
    cloud_modules,
    cloud_modules_cfg,
    fsck_root_dropin,
    masked_units,
    sshd_password_cfg,
    update_done_stamp,
)
from builder.pipeline.specs import image_spec
from builder.recipe import load_recipe
from builder.render.write import render_recipe

REPO = Path(__file__).resolve().parents[2]
SCHEMA = Path("/usr/lib/python3/dist-packages/cloudinit/config/schemas/schema-cloud-config-v1.json")
# user-data keys whose module the image leaves out on purpose: set when the image is built
BAKED = {"locale": "ImageSpec.locale", "timezone": "ImageSpec.timezone", "ssh_pwauth": "sshd_config.d drop-in"}
NOTHING_TO_DO = {"package_update": False, "package_upgrade": False}

VARIANTS = {
    "plain": "",
    "late-commands": "late_commands: ['touch /root/made-by-late-command']\n",
    "root-password": "root:\n  login: true\n  password_env: TEST_ROOT_PW\n",
    "user-password": "users:\n  - name: admin\n    sudo: true\n    password_env: TEST_ADMIN_PW\n",
}


def modules_of_keys() -> dict[str, set[str]]:
    """user-data key -> the cloud-init modules that read it, from cloud-init's JSON schema ($defs/cc_NAME)."""
    defs = json.loads(SCHEMA.read_text())["$defs"]
    found: dict[str, set[str]] = {}
    for name, definition in defs.items():
        if name.startswith("cc_"):
            for key in definition.get("properties") or {}:
                found.setdefault(key, set()).add(name.removeprefix("cc_"))
    return found


@pytest.mark.parametrize("base", ["web-server", "golden-base", "lxde-desktop"])
@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_every_user_data_key_has_its_module_or_is_baked(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        base: str, variant: str) -> None:
    recipes = tmp_path / "recipes"
    shutil.copytree(REPO / "recipes", recipes)
    (recipes / "probe.yaml").write_text(f"extends: {base}\nhostname: probe\n{VARIANTS[variant]}")
    monkeypatch.setenv("TEST_ROOT_PW", "correct horse")
    monkeypatch.setenv("TEST_ADMIN_PW", "battery staple")
    recipe = load_recipe("probe", recipes)
    rendered = render_recipe(recipe, tmp_path / "out")
    user_data = yaml.safe_load((rendered.out_dir / "user-data").read_text())
    spec = image_spec(recipe)
    kept = {m for modules in cloud_modules(spec.first_boot).values() for m in modules}
    readers = modules_of_keys()
    for key, value in user_data.items():
        if key in BAKED or NOTHING_TO_DO.get(key, object()) == value:
            continue
        assert readers.get(key, set()) & kept, f"user-data key {key!r} is read by {readers.get(key)}, none kept"
    assert spec.first_boot.ssh_password_auth == user_data["ssh_pwauth"]  # the baked setting is the seed's
    assert ("set_passwords" in kept) == ("chpasswd" in user_data)
    assert {"runcmd", "scripts_user"} <= kept  # late commands or not: one image for both
    assert spec == image_spec(load_recipe(base, REPO / "recipes")) or variant.endswith("password")  # same image


def test_module_lists_are_cloud_config_the_guests_cloud_init_reads(tmp_path: Path) -> None:
    cfg = cloud_modules_cfg(FirstBoot(root_password=True))
    parsed = yaml.safe_load(cfg)
    assert parsed == {"cloud_init_modules": [*cloud_modules(FirstBoot())["cloud_init_modules"], "set_passwords"],
                      "cloud_config_modules": ["runcmd"], "cloud_final_modules": ["scripts_user", "final_message"]}
    path = tmp_path / "91_imgbuild_modules.cfg"
    path.write_text("#cloud-config\n" + cfg)
    result = subprocess.run(["cloud-init", "schema", "-c", str(path)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_sshd_and_fsck_drop_ins() -> None:
    assert sshd_password_cfg(FirstBoot()).splitlines()[-1] == "PasswordAuthentication no"
    assert sshd_password_cfg(FirstBoot(ssh_password_auth=True)).splitlines()[-1] == "PasswordAuthentication yes"
    assert "[Unit]\nConditionPathExists=/var/lib/cloud/instance\n" in fsck_root_dropin()


def test_the_update_stamp_is_systemd_update_dones_with_the_image_time() -> None:
    lines = update_done_stamp(1794401659).splitlines()
    assert lines[0].startswith("# This file was created by systemd-update-done.")
    assert lines[-1] == "TIMESTAMP_NSEC=1794401659000000000"  # no clamped file is newer: nothing to update


def test_the_shipped_recipes_need_no_password_module_and_only_dhcp_waits_for_the_network() -> None:
    for name in ("web-server", "ssh-server", "golden-base", "lxde-desktop"):
        recipe = load_recipe(name, REPO / "recipes")
        fb = image_spec(recipe).first_boot
        assert fb == FirstBoot(static_network=recipe.network.is_static), (name, fb)
        assert ("systemd-networkd-wait-online.service" in masked_units(fb)) == (recipe.network.mode != "dhcp")
