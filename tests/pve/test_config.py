"""Target configuration: environment variables and the targets file, with clear errors naming file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from builder.errors import InvalidInput
from builder.targets.pve.config import load_config, normalize_fingerprint, parse_jump_spec

SECRET = "0f3c2a9e-secret-value-7b1d"
FP = ":".join(["AB"] * 32)

ENV = {
    "PROXMOX_URL": "https://pve.example:8006/",
    "PROXMOX_TOKEN_ID": "imgbuild@pve!build",
    "PROXMOX_TOKEN_SECRET": SECRET,
    "PROXMOX_NODE": "pve1",
}


def test_environment_gives_the_pve_target() -> None:
    cfg = load_config("pve", {**ENV, "PROXMOX_FINGERPRINT": FP.lower(), "PROXMOX_DISK_STORAGE": "tank"})
    assert (cfg.name, cfg.url, cfg.user, cfg.token_name, cfg.node) == (
        "pve", "https://pve.example:8006", "imgbuild@pve", "build", "pve1")
    assert (cfg.iso_storage, cfg.disk_storage, cfg.image_storage) == ("local", "tank", "local")
    assert cfg.fingerprint == FP
    assert SECRET not in repr(cfg)


def test_environment_missing_variables_are_listed_at_once() -> None:
    with pytest.raises(InvalidInput) as err:
        load_config("pve", {"PROXMOX_URL": "https://pve:8006"})
    assert "PROXMOX_TOKEN_ID" in err.value.message and "PROXMOX_TOKEN_SECRET" in err.value.message
    assert "PROXMOX_NODE" not in err.value.message  # optional: without it, each VM's node is chosen


@pytest.mark.parametrize(("var", "value", "expect"), [
    ("PROXMOX_URL", "http://pve:8006", "https://"),
    ("PROXMOX_TOKEN_ID", "root@pam", "user@realm!tokenname"),
    ("PROXMOX_FINGERPRINT", "AB:CD", "SHA-256 fingerprint"),
    ("PROXMOX_CA_FILE", "/nonexistent/ca.pem", "does not exist"),
    ("PROXMOX_JUMP_HOST", "root@jump:22", "PROXMOX_JUMP_KNOWN_HOSTS"),
])
def test_environment_values_are_checked(var: str, value: str, expect: str) -> None:
    with pytest.raises(InvalidInput) as err:
        load_config("pve", {**ENV, var: value})
    text = err.value.message + err.value.detail
    assert expect in text
    assert SECRET not in text


def _targets(tmp_path: Path, entry: dict, name: str = "lab") -> dict[str, str]:
    path = tmp_path / "targets.yaml"
    path.write_text(yaml.safe_dump({"targets": {name: entry}}))
    return {"IMGBUILD_TARGETS": str(path), "LAB_SECRET": SECRET}


BASE = {"url": "https://10.0.0.5:8006", "token_id": "imgbuild@pve!build", "token_secret_env": "LAB_SECRET",
        "node": "pve1", "iso_storage": "local", "disk_storage": "local-lvm"}


def test_targets_file_entry(tmp_path: Path) -> None:
    (tmp_path / "jump_known_hosts").write_text("")
    env = _targets(tmp_path, {**BASE, "fingerprint": FP, "jump_host": {
        "host": "10.0.0.5", "user": "root", "known_hosts": "jump_known_hosts"}, "task_timeout": 30})
    cfg = load_config("lab", env)
    assert cfg.token_secret == SECRET and cfg.task_timeout == 30
    assert cfg.jump_host is not None and cfg.jump_host.known_hosts == tmp_path / "jump_known_hosts"
    assert cfg.jump_host.port == 22 and cfg.source == str(tmp_path / "targets.yaml")


def test_secret_file_must_not_be_world_readable(tmp_path: Path) -> None:
    secret = tmp_path / "lab.secret"
    secret.write_text(SECRET + "\n")
    entry = {**BASE, "token_secret_file": "lab.secret"}
    del entry["token_secret_env"]
    env = _targets(tmp_path, entry)
    secret.chmod(0o644)
    with pytest.raises(InvalidInput) as err:
        load_config("lab", env)
    assert "targets.lab" in err.value.message and "token_secret_file" in err.value.message
    assert "readable" in err.value.message and SECRET not in err.value.message + err.value.detail
    secret.chmod(0o600)
    assert load_config("lab", env).token_secret == SECRET


@pytest.mark.parametrize(("change", "expect"), [
    ({"token_secret": SECRET}, "secrets do not belong in the targets file"),
    ({"url": None}, "url: required"),
    ({"node": "pve_1"}, "node: 'pve_1' is not a node name"),
    ({"colour": "blue"}, "colour: unknown setting"),
    ({"token_secret_env": "NOT_SET_ANYWHERE"}, "NOT_SET_ANYWHERE is not set"),
    ({"token_id": "imgbuild"}, "token_id"),
    ({"fingerprint": "zz"}, "fingerprint"),
    ({"task_timeout": -1}, "task_timeout"),
    ({"jump_host": {"host": "j"}}, "jump_host.known_hosts: required"),
])
def test_targets_file_errors_name_file_and_field(tmp_path: Path, change: dict, expect: str) -> None:
    entry = {**BASE, **change}
    entry = {k: v for k, v in entry.items() if v is not None}
    with pytest.raises(InvalidInput) as err:
        load_config("lab", _targets(tmp_path, entry))
    text = err.value.message + "\n" + err.value.detail
    assert str(tmp_path / "targets.yaml") in err.value.message
    assert expect in text
    assert SECRET not in text


def test_unknown_target_lists_the_known_ones(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=r"no target named 'prod' .*defined: lab"):
        load_config("prod", _targets(tmp_path, BASE))


def test_missing_targets_file(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        load_config("lab", {"IMGBUILD_TARGETS": str(tmp_path / "nope.yaml")})
    with pytest.raises(InvalidInput, match="PROXMOX_URL"):
        load_config("pve", {"HOME": str(tmp_path)})


def test_fingerprint_and_jump_spec_parsing() -> None:
    assert normalize_fingerprint("ab" * 32) == FP
    assert normalize_fingerprint("sha256:" + FP) == FP
    assert normalize_fingerprint("ab" * 31) is None
    assert parse_jump_spec("root@[::1]:2222") == ("root", "::1", 2222)
    assert parse_jump_spec("jump.example") == (None, "jump.example", None)
