"""Secrets never shown: proxy credentials and passwords from the environment are hidden in progress
output, logs (also with --debug), error messages, report.json and every file readable by others.

The recipe's proxy points at a closed loopback port, so the image build's mmdebstrap (a real run,
with a private image cache so no other build's lock delays it) fails at once, printing its command line
and apt's errors, the two places the credentials showed before.
"""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from builder.errors import CommandFailed
from builder.proc import run
from builder.secrets.redact import redact, remember, url_secrets
from tests.hardening.conftest import REPO, cli

PROXY_PASSWORD = "S3cret-Proxy-pw"
ADMIN_PASSWORD = "Adm1n-Passw0rd-from-env"


@pytest.fixture
def leaky(tmp_path: Path) -> Path:
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    shutil.copy(REPO / "recipes" / "base.yaml", recipes)
    (recipes / "leaky.yaml").write_text(f"""\
extends: base
hostname: leaky
locale: de_DE.UTF-8   # not a cached golden image: the build runs
users:
  - name: admin
    sudo: true
    password_env: LEAKY_ADMIN_PASSWORD
mirror:
  proxy: http://alice:{PROXY_PASSWORD}@127.0.0.1:9/
""")
    return recipes


def files_showing(root: Path, secret: str) -> dict[str, int]:
    """Files under *root* that contain *secret*, with their modes."""
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*")
            if p.is_file() and secret.encode() in p.read_bytes()}


@pytest.mark.skipif(os.geteuid() != 0, reason="building a golden image needs root")
def test_proxy_credentials_and_passwords_never_show(leaky: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {"LEAKY_ADMIN_PASSWORD": ADMIN_PASSWORD, "IMGBUILD_CACHE": str(tmp_path / "cache")}
    for debug in ((), ("--debug",)):
        proc = cli(*debug, "make", "leaky", out=out, recipes=leaky, env=env, timeout=300)
        assert proc.returncode == 1, proc.stderr[-2000:]
        assert "mmdebstrap" in proc.stderr and "127.0.0.1:9" in proc.stderr  # the failure is explained ...
        for secret in (PROXY_PASSWORD, ADMIN_PASSWORD):  # ... without the secrets
            assert secret not in proc.stdout + proc.stderr
    for secret in (PROXY_PASSWORD, ADMIN_PASSWORD):
        shown = files_showing(out, secret) | files_showing(tmp_path / "cache", secret)
        # only the installer's preseed needs the proxy (d-i fetches through it); it is the user's alone
        assert set(shown) <= {"leaky/preseed.cfg"} and all(mode == 0o600 for mode in shown.values()), shown
    assert "alice:***@127.0.0.1:9" in (out / "leaky" / "report.json").read_text()

    show = cli("show", "leaky", out=out, recipes=leaky)
    assert show.returncode == 0 and PROXY_PASSWORD not in show.stdout and "alice:***@" in show.stdout


def test_a_failing_command_hides_remembered_secrets_and_url_credentials() -> None:
    remember("hunter2-remembered")
    with pytest.raises(CommandFailed) as raised:
        run(["sh", "-c", 'echo "$0 $1" >&2; exit 3', "hunter2-remembered", "http://bob:pw-in-url@proxy:3128/"])
    text = raised.value.message + raised.value.detail
    assert "hunter2-remembered" not in text and "pw-in-url" not in text and "bob:***@proxy:3128" in text


def test_url_secrets_are_the_password_as_written_and_decoded() -> None:
    assert url_secrets("http://u:p%40ss@proxy:3128/") == ("p%40ss", "p@ss")
    assert url_secrets("http://proxy:3128/") == () and url_secrets(None) == ()
    assert redact("Acquire::http::Proxy \"http://u:anything@proxy:3128/\"") == 'Acquire::http::Proxy "http://u:***@proxy:3128/"'
