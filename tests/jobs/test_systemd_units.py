"""contrib/systemd: the nightly service and timer pass `systemd-analyze verify`, and run real imgbuild commands."""

from __future__ import annotations

import configparser
import shlex
import subprocess
from pathlib import Path

import pytest

from builder.cli.main import build_parser
from tests.pve.conftest import REPO

UNITS = REPO / "contrib" / "systemd"


def verify(folder: Path, *names: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", *names], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=False)


def unit(name: str) -> configparser.RawConfigParser:
    parser = configparser.RawConfigParser(strict=False, interpolation=None)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string((UNITS / name).read_text())
    return parser


def test_units_verify(tmp_path: Path) -> None:
    """As installed from this checkout: the units name /opt/imgbuild, here replaced by this repository (verify
    checks that the commands exist and are executable)."""
    assert (REPO / ".venv" / "bin" / "imgbuild").exists()
    for path in UNITS.glob("imgbuild-nightly.*"):
        (tmp_path / path.name).write_text(path.read_text().replace("/opt/imgbuild", str(REPO)))
    proc = verify(tmp_path, "imgbuild-nightly.timer", "imgbuild-nightly.service")
    assert proc.returncode == 0 and proc.stderr.strip() == "", proc.stderr
    # the check has teeth: a broken calendar is refused
    timer = tmp_path / "imgbuild-nightly.timer"
    timer.write_text(timer.read_text().replace("OnCalendar=*-*-* 02:30:00", "OnCalendar=*-*-* 25:61"))
    bad = verify(tmp_path, "imgbuild-nightly.timer")
    assert bad.returncode != 0 and "calendar" in bad.stderr


def test_timer_is_persistent_randomized_and_runs_the_service() -> None:
    timer = unit("imgbuild-nightly.timer")["Timer"]
    assert timer["Persistent"] == "true" and timer["RandomizedDelaySec"] and timer["OnCalendar"]
    assert timer["Unit"] == "imgbuild-nightly.service"
    assert unit("imgbuild-nightly.timer")["Install"]["WantedBy"] == "timers.target"


def test_service_runs_make_all_and_a_golden_release_into_the_journal() -> None:
    text = (UNITS / "imgbuild-nightly.service").read_text()
    starts = [line.split("=", 1)[1].lstrip("-") for line in text.splitlines() if line.startswith("ExecStart=")]
    commands = [shlex.split(s)[1:] for s in starts]
    assert commands == [["make", "--all", "--refresh-image"], ["release", "golden-base", "--keep", "3"]]
    post = [shlex.split(line.split("=", 1)[1])[1:] for line in text.splitlines() if line.startswith("ExecStopPost=")]
    assert post == [["report", "--html", "/var/lib/imgbuild/index.html"]]
    parser = build_parser()
    for argv in commands + post:  # the CLI takes them as written
        args = parser.parse_args(argv)
        assert callable(args.func)
    assert (REPO / "recipes" / "golden-base.yaml").exists()
    service = unit("imgbuild-nightly.service")["Service"]
    assert service["StandardOutput"] == "journal" and service["StandardError"] == "journal"
    assert service["Type"] == "oneshot" and service["KillMode"] == "mixed"


@pytest.mark.parametrize("line", ["30 2 * * *"])
def test_readme_cron_line_matches_the_commands(line: str) -> None:
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Nightly rebuilds", 1)[1].split("\n## ", 1)[0]
    cron = [x for x in section.splitlines() if x.startswith(line)]
    assert len(cron) == 1 and "make --all --refresh-image" in cron[0] and "release golden-base" in cron[0]
    assert "imgbuild-nightly.timer" in section
