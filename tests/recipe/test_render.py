"""Rendering: real files checked by Debian's own validators; stable, atomic, secrets handled."""

from __future__ import annotations

import os
import re
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

from builder.fsutil import atomic_output
from builder.recipe import load_recipe
from builder.render.write import render_recipe
from builder.secrets.passwords import verify_password
from tests.debconf import check_preseed
from tests.recipe.conftest import SHIPPED, write_recipe

RENDERED = ("preseed.cfg", "user-data", "meta-data", "network-config", "known_hosts")


def run(*cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module")
def rendered_all(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("out")
    repo_recipes = Path(__file__).resolve().parents[2] / "recipes"
    for name in SHIPPED:
        render_recipe(load_recipe(name, repo_recipes), out)
    return out


@pytest.mark.parametrize("name", SHIPPED)
def test_preseed_passes_debconf_set_selections(rendered_all: Path, name: str) -> None:
    preseed = rendered_all / name / "preseed.cfg"
    result = check_preseed(preseed)
    assert result.returncode == 0, result.stderr
    assert preseed.read_text().startswith("#_preseed_V1\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_user_data_passes_cloud_init_schema(rendered_all: Path, name: str) -> None:
    user_data = rendered_all / name / "user-data"
    result = run("cloud-init", "schema", "-c", str(user_data))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Valid cloud-config" in result.stdout
    assert user_data.read_text().startswith("#cloud-config\n")


@pytest.mark.parametrize("name", SHIPPED)
def test_network_config_converts_with_cloud_init(rendered_all: Path, name: str, tmp_path: Path) -> None:
    recipe = load_recipe(name, Path(__file__).resolve().parents[2] / "recipes")
    result = run("cloud-init", "devel", "net-convert", "-p", str(rendered_all / name / "network-config"),
                 "-k", "yaml", "-D", "debian", "-O", "networkd", "-d", str(tmp_path))
    assert result.returncode == 0, result.stderr
    units = "".join(p.read_text() for p in tmp_path.rglob("*.network"))
    assert f"MACAddress={recipe.network.mac.lower()}" in units
    if recipe.network.address:
        assert f"Address={recipe.network.address}" in units
        assert f"Gateway={recipe.network.gateway}" in units
    else:
        assert "DHCP=ipv4" in units


def test_web_server_files(rendered_all: Path) -> None:
    d = rendered_all / "web-server"
    preseed = d.joinpath("preseed.cfg").read_text()
    for line in [
        "d-i netcfg/get_ipaddress string 192.168.1.250",
        "d-i netcfg/get_netmask string 255.255.255.0",
        "d-i netcfg/get_gateway string 192.168.1.1",
        "d-i netcfg/confirm_static boolean true",
        "d-i netcfg/get_hostname string web-server",
        "d-i mirror/http/hostname string deb.debian.org",
        "d-i passwd/root-login boolean false",
        "d-i partman-auto/disk string /dev/vda",
        "d-i partman/confirm_nooverwrite boolean true",
        "tasksel tasksel/first multiselect web-server, ssh-server, standard",
        "d-i pkgsel/include string qemu-guest-agent cloud-init openssh-server",
        "d-i grub-installer/bootdev string /dev/vda",
        "d-i debian-installer/exit/poweroff boolean true",
    ]:
        assert line in preseed.splitlines(), line
    assert "d-i preseed/late_command string in-target sh -c" in preseed
    network = yaml.safe_load(d.joinpath("network-config").read_text())
    eth = network["ethernets"]["eth0"]
    assert network["version"] == 2
    assert eth["routes"] == [{"to": "0.0.0.0/0", "via": "192.168.1.1"}]
    assert eth["addresses"] == ["192.168.1.250/24"]
    meta = yaml.safe_load(d.joinpath("meta-data").read_text())
    assert meta["local-hostname"] == "web-server" and meta["instance-id"].startswith("iid-imgbuild-")


def test_lxde_desktop_logs_admin_in_at_boot(rendered_all: Path) -> None:
    """desktop.autologin: a lightdm drop-in written by cloud-init (before the display manager starts)."""
    files = {f["path"]: f["content"] for f in yaml.safe_load((rendered_all / "lxde-desktop" / "user-data").read_text())
             ["write_files"]}
    conf = files["/etc/lightdm/lightdm.conf.d/50-imgbuild-autologin.conf"]
    assert conf.splitlines()[1:] == ["[Seat:*]", "autologin-user=admin", "autologin-user-timeout=0",
                                     "autologin-session=LXDE", "xserver-command=X -s 0 -dpms"]
    for name in SHIPPED:  # no other recipe logs anyone in
        if name != "lxde-desktop":
            assert "lightdm" not in (rendered_all / name / "user-data").read_text()


def test_keys_are_generated_once_pinned_and_private(rendered_all: Path) -> None:
    d = rendered_all / "web-server"
    for secret in ("ssh_host_ed25519_key", "id_ed25519", "user-data", "preseed.cfg"):
        assert stat.S_IMODE(d.joinpath(secret).stat().st_mode) == 0o600, secret
    assert stat.S_IMODE(d.stat().st_mode) == 0o700
    host_pub = d.joinpath("ssh_host_ed25519_key.pub").read_text().split()[:2]
    known = d.joinpath("known_hosts").read_text().split()
    assert known[0] == "web-server,web-server.lab.internal,192.168.1.250" and known[1:3] == host_pub
    user_data = yaml.safe_load(d.joinpath("user-data").read_text())
    assert user_data["ssh_keys"]["ed25519_public"].split()[:2] == host_pub
    assert "BEGIN OPENSSH PRIVATE KEY" in user_data["ssh_keys"]["ed25519_private"]
    admin_pub = " ".join(d.joinpath("id_ed25519.pub").read_text().split()[:2])
    assert any(k.startswith(admin_pub) for k in user_data["users"][0]["ssh_authorized_keys"])


def test_rendering_twice_is_byte_identical(recipes: Path, out: Path) -> None:
    recipe = load_recipe("web-server", recipes)
    first = render_recipe(recipe, out)
    before = {n: (out / "web-server" / n).read_bytes() for n in RENDERED}
    second = render_recipe(load_recipe("web-server", recipes), out)
    assert first.changed == RENDERED and second.changed == ()
    assert before == {n: (out / "web-server" / n).read_bytes() for n in RENDERED}
    assert not list((out / "web-server").glob(".*.part"))


def test_changed_recipe_changes_instance_id(recipes: Path, out: Path) -> None:
    render_recipe(load_recipe("web-server", recipes), out)
    iid = yaml.safe_load((out / "web-server" / "meta-data").read_text())["instance-id"]
    text = (recipes / "web-server.yaml").read_text().replace("192.168.1.250/24", "192.168.1.251/24")
    write_recipe(recipes, "web-server", text)
    render_recipe(load_recipe("web-server", recipes), out)
    assert yaml.safe_load((out / "web-server" / "meta-data").read_text())["instance-id"] != iid


def test_given_key_means_no_generated_admin_key(recipes: Path, out: Path) -> None:
    pub = (Path(__file__).parent / "data" / "user_key.pub").read_text().strip()
    write_recipe(recipes, "keyed", f"extends: ssh-server\nusers:\n  - name: ops\n    ssh_keys: ['{pub}']\n")
    rendered = render_recipe(load_recipe("keyed", recipes), out)
    assert rendered.admin_key is None and not (out / "keyed" / "id_ed25519").exists()
    user_data = yaml.safe_load((out / "keyed" / "user-data").read_text())
    assert user_data["users"][0]["ssh_authorized_keys"] == [pub]


def test_password_from_environment_is_hashed_and_never_written(imgbuild, recipes: Path, out: Path) -> None:
    write_recipe(recipes, "pw", "extends: ssh-server\nusers:\n  - name: ops\n    password_env: OPS_PW\n")
    missing = imgbuild("render", "pw", env={k: v for k, v in os.environ.items() if k != "OPS_PW"})
    assert missing.returncode == 2 and "environment variable OPS_PW is not set" in missing.stderr
    env = dict(os.environ, OPS_PW="correct horse battery staple")
    assert imgbuild("render", "pw", env=env).returncode == 0
    files = {p.name: p.read_text() for p in (out / "pw").iterdir() if p.is_file()}
    assert not any("correct horse" in text for text in files.values())
    hashed = re.search(r"passwd/user-password-crypted password (\S+)", files["preseed.cfg"]).group(1)
    assert hashed.startswith("$y$") and verify_password("correct horse battery staple", hashed)
    assert yaml.safe_load(files["user-data"])["users"][0]["hashed_passwd"] == hashed
    # Re-rendering with the same password keeps the hash (so output is stable); a new password changes it.
    assert imgbuild("render", "pw", env=env).returncode == 0
    assert (out / "pw" / "preseed.cfg").read_text() == files["preseed.cfg"]
    env["OPS_PW"] = "another one"
    assert imgbuild("render", "pw", env=env).returncode == 0
    assert hashed not in (out / "pw" / "preseed.cfg").read_text()


def test_strict_undefined_in_templates(recipes: Path, out: Path, tmp_path: Path, monkeypatch) -> None:
    templates = tmp_path / "templates"
    templates.mkdir()
    (templates / "preseed.cfg.j2").write_text("#_preseed_V1\nd-i x string {{ no_such_value }}\n")
    monkeypatch.setenv("IMGBUILD_PRESEED_DIR", str(templates))
    import jinja2

    with pytest.raises(jinja2.UndefinedError):
        render_recipe(load_recipe("web-server", recipes), out)


def test_atomic_output_leaves_old_file_on_failure(tmp_path: Path) -> None:
    target = tmp_path / "f"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(target) as fh:
        fh.write(b"half")
        raise RuntimeError("boom")
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f"]
