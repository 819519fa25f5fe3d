"""The PVE target's settings are declared once: both readers and the documentation come from SETTINGS."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from builder.errors import InvalidInput
from builder.targets.pve.config import load_config
from builder.targets.pve.settings import SETTINGS, PveConfig, doc_markdown, settings_table

REPO = Path(__file__).resolve().parents[2]
SECRET = "0f3c2a9e-secret-value-7b1d"
FP = ":".join(["AB"] * 32)


def test_docs_are_generated_from_the_table() -> None:
    doc = (REPO / "docs" / "pve-target.md").read_text()
    assert doc == doc_markdown(), "docs/pve-target.md is stale: python -m builder.targets.pve.settings > docs/pve-target.md"
    readme = (REPO / "README.md").read_text()
    block = re.search(r"<!-- pve-settings:begin -->\n(.*?)<!-- pve-settings:end -->", readme, re.S)
    assert block is not None and block.group(1) == settings_table(), (
        "README's settings table is stale: paste `python -c 'from builder.targets.pve.settings import "
        "settings_table; print(settings_table(), end=\"\")'` between the pve-settings markers")


def test_every_setting_fills_a_field_and_every_field_has_a_setting() -> None:
    fields = {f.name for f in dataclasses.fields(PveConfig)} - {"name", "source"}
    targets = {s.target_field for s in SETTINGS}
    assert targets - fields - {"jump_host.known_hosts", "jump_host.key_file"} == set()
    assert fields - targets == set()
    assert len({s.env for s in SETTINGS if s.env}) == len([s for s in SETTINGS if s.env])


ENV = {"PROXMOX_URL": "https://pve.example", "PROXMOX_TOKEN_ID": "imgbuild@pve!build",
       "PROXMOX_TOKEN_SECRET": SECRET}


@pytest.mark.parametrize("setting", [s for s in SETTINGS if s.env and s.key not in ("url", "token_id")],
                         ids=lambda s: s.key)
def test_each_environment_variable_is_read_and_checked(setting, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    good = {"token_secret": "s3cret", "token_secret_file": "secret", "node": "pve2", "iso_storage": "isos",
            "disk_storage": "tank", "import_storage": "shared", "ca_file": "ca.pem", "fingerprint": FP.lower(),
            "jump_host": "jump@pve1:2222", "jump_host.known_hosts": "kh", "jump_host.key_file": "key",
            "task_timeout": "30", "agent_timeout": "1200", "sdn_zone": "labnat"}[setting.key]
    for name in ("ca.pem", "kh", "key", "secret"):
        (tmp_path / name).write_text("x\n")
    (tmp_path / "secret").chmod(0o600)
    env = {**ENV, setting.env: str(tmp_path / good) if setting.key.endswith(("file", "hosts")) or
           setting.key in ("ca_file", "token_secret_file") else good}
    if setting.key.startswith("jump_host"):
        env.update({"PROXMOX_JUMP_HOST": "jump@pve1:2222", "PROXMOX_JUMP_KNOWN_HOSTS": str(tmp_path / "kh")})
    cfg = load_config("pve", env)
    value = getattr(cfg, setting.target_field) if "." not in setting.key else getattr(
        cfg.jump_host, setting.key.split(".")[1])
    assert value not in (None, setting.default), setting.key
    bad = {"token_secret": " ", "token_secret_file": str(tmp_path / "none"), "node": "pve_2",
           "iso_storage": "9x", "disk_storage": "-", "import_storage": "a b", "ca_file": "/no/ca.pem",
           "fingerprint": "AB", "jump_host": "a:b:c", "jump_host.known_hosts": "/no/kh",
           "jump_host.key_file": "/no/key", "task_timeout": "-1", "agent_timeout": "soon",
           "sdn_zone": "much-too-long"}[setting.key]
    if bad.strip():
        with pytest.raises(InvalidInput) as err:
            load_config("pve", {**env, setting.env: bad})
        assert setting.env in err.value.message + err.value.detail


def test_targets_file_reports_every_problem_at_once_with_lines(tmp_path: Path) -> None:
    path = tmp_path / "targets.yaml"
    path.write_text(
        "targets:\n"
        "  lab:\n"
        "    url: http://pve\n"            # line 3
        "    token_id: imgbuild\n"          # line 4
        "    token_secret_env: LAB\n"
        "    colour: blue\n"                # line 6
        "    task_timeout: -5\n"            # line 7
        "    jump_host:\n"                  # line 8
        "      host: jump\n"
        "      shell: zsh\n"                # line 10
    )
    with pytest.raises(InvalidInput) as err:
        load_config("lab", {"IMGBUILD_TARGETS": str(path), "LAB": SECRET})
    text = err.value.message + "\n" + err.value.detail
    for line, field in ((3, "url"), (4, "token_id"), (6, "colour"), (7, "task_timeout"), (10, "jump_host.shell"),
                        (8, "jump_host.known_hosts")):
        assert f"targets.yaml:{line}: targets.lab.{field}:" in text, (line, field, text)
    assert "(and 5 more)" in err.value.message and SECRET not in text


def test_node_is_optional_and_agent_timeout_configurable(tmp_path: Path) -> None:
    cfg = load_config("pve", ENV)
    assert cfg.node is None and cfg.agent_timeout == 900 and cfg.sdn_zone == "imgbuild"
    assert load_config("pve", {**ENV, "PROXMOX_AGENT_TIMEOUT": "1800"}).agent_timeout == 1800
