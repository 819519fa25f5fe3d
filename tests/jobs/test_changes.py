"""What changed in a golden image: since the previous build of a recipe (make), since the latest release
(release, whose manifest is stored with its template), and `imgbuild diff` of images, reports and releases.

The manifests are real: this host's own dpkg database read by the image builder's manifest code
(builder/image/manifest.py), and a "refreshed" one with a security update applied to two of its packages
and one package added and one removed, as a nightly refresh would show.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from builder.image.manifest import Manifest, Package, query_admindir, write_manifest
from tests.jobs.conftest import Guests
from tests.pvesim.simulator import PveSimulator


@pytest.fixture(scope="module")
def host_manifest() -> Manifest:
    packages = query_admindir(Path("/var/lib/dpkg"))
    assert len(packages) > 100  # a real Debian system
    return Manifest("host", "trixie", packages, ("openssh-server",))


def refreshed(old: Manifest) -> tuple[Manifest, list[str]]:
    """*old* after a night: the first two packages get a +deb13u1 update, one is removed, one added."""
    bumped = old.packages[:2]
    packages = [replace(p, version=p.version + "+deb13u1") for p in bumped]
    packages += list(old.packages[2:-1])
    packages.append(Package("zz-imgbuild-test", "1.0-1", "all", "zz-imgbuild-test"))
    return replace(old, packages=tuple(sorted(packages))), [p.name for p in bumped]


def test_make_says_what_changed_since_the_previous_build(cli, guests: Guests, host_manifest: Manifest,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    guests.manifest = host_manifest
    assert cli("make", "golden-base", "--target", "sim") == 0
    first = json.loads((cli.out / "golden-base" / "report.json").read_text())
    assert first["changes"]["summary"] == f"first build with a package manifest ({len(host_manifest.packages)} " \
                                          "packages)"
    newer, bumped = refreshed(host_manifest)
    guests.manifest = newer
    capsys.readouterr()
    assert cli("make", "golden-base", "--refresh-image", "--target", "sim") == 0
    report = json.loads((cli.out / "golden-base" / "report.json").read_text())
    changes = report["changes"]
    assert changes["since"] == first["started"]
    assert sorted(c["name"] for c in changes["upgraded"]) == sorted(bumped)
    assert [p["name"] for p in changes["added"]] == ["zz-imgbuild-test"]
    assert [p["name"] for p in changes["removed"]] == [host_manifest.packages[-1].name]
    assert changes["summary"].startswith("2 packages upgraded: ")
    assert f"image: {changes['summary']}" in capsys.readouterr().out
    # the kept copies outlive the image's own manifest, which a refresh replaces
    assert Path(first["cache"]["image"]["manifest_copy"]).exists()
    assert first["cache"]["image"]["manifest_copy"] != report["cache"]["image"]["manifest_copy"]

    # imgbuild diff of two reports (one from the history), both ways
    old_report = sorted((cli.out / "golden-base" / "history").glob("*.json"))[0]
    capsys.readouterr()
    assert cli("diff", str(old_report), str(cli.out / "golden-base" / "report.json"), "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["summary"] == changes["summary"] and data["a"]["packages"] == len(host_manifest.packages)
    assert cli("diff", str(cli.out / "golden-base" / "report.json"), str(old_report)) == 0
    text = capsys.readouterr().out
    assert "2 packages downgraded" in text and "+ " + host_manifest.packages[-1].name in text
    assert "- zz-imgbuild-test 1.0-1" in text


@pytest.mark.parametrize("size", ["small", "large"])
def test_a_release_stores_its_manifest_and_says_what_changed(size: str, cli, guests: Guests,
                                                             host_manifest: Manifest, sim_env: PveSimulator,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A small manifest rides in the PVE template's description (8 KiB); a large one (a desktop's) leaves its
    sha256 there, and the copy in OUT/RELEASE/ is what the next release and diff read."""
    if size == "small":
        host_manifest = replace(host_manifest, packages=host_manifest.packages[:200])
    guests.manifest = host_manifest
    assert cli("release", "golden-base", "--target", "sim") == 0
    first = json.loads((cli.out / "golden-base" / "release.json").read_text())
    newer, bumped = refreshed(host_manifest)
    guests.manifest = newer
    assert cli("release", "golden-base", "--refresh-image", "--target", "sim") == 0
    second = json.loads((cli.out / "golden-base" / "release.json").read_text())
    assert second["changes"]["against"] == f"release {first['release']['name']}"
    assert sorted(c["name"] for c in second["changes"]["upgraded"]) == sorted(bumped)
    # stored with the template on PVE (in its description, compressed) and readable back through the API
    config = next(v["config"] for v in sim_env.vms() if v["config"]["name"] == second["release"]["name"])
    if size == "small":
        assert "imgbuild-manifest: xz+base64:" in config["description"]
        assert second["release"]["manifest"].startswith("the description of VM")
    else:
        assert "imgbuild-manifest-sha256: " in config["description"] and "xz+base64" not in config["description"]
        assert "too large for PVE's 8 KiB description" in second["release"]["manifest"]
    assert (cli.out / second["release"]["name"] / "release-manifest.json").exists()
    capsys.readouterr()
    assert cli("diff", first["release"]["name"], second["release"]["name"], "--target", "sim", "--json") == 0
    data = json.loads(capsys.readouterr().out)
    assert data["a"]["what"] == f"release {first['release']['name']}" and len(data["upgraded"]) == 2


def test_diff_says_which_input_is_missing_or_unrelated(cli, tmp_path: Path, host_manifest: Manifest,
                                                       small_qcow2: Path, capsys: pytest.CaptureFixture[str]) -> None:
    write_manifest(small_qcow2, host_manifest)
    assert cli("diff", str(small_qcow2), str(tmp_path / "nope.qcow2")) == 2
    assert "B (" + str(tmp_path / "nope.qcow2") + "): no such file, and not a release name" in capsys.readouterr().err
    bare = tmp_path / "bare.qcow2"
    bare.write_bytes(small_qcow2.read_bytes())
    assert cli("diff", str(bare), str(small_qcow2)) == 2
    assert "A (" + str(bare) + "): this image has no package manifest beside it (bare.manifest.json)" in \
        capsys.readouterr().err
    old = tmp_path / "bookworm.manifest.json"
    old.write_text(json.dumps(replace(host_manifest, release="bookworm").as_dict()))
    assert cli("diff", str(old), str(small_qcow2)) == 2
    err = capsys.readouterr().err
    assert "are unrelated" in err and "Debian bookworm" in err and "Debian trixie" in err
    failed = tmp_path / "report.json"
    failed.write_text(json.dumps({"recipe": "web-server", "stages": [{"name": "render", "ok": False}],
                                  "cache": {}}))
    assert cli("diff", str(failed), str(small_qcow2)) == 2
    assert "names no package manifest: it failed before its image stage" in capsys.readouterr().err
    assert cli("diff", "web-server-20261130-9", str(small_qcow2), "--target", "sim") == 2
    assert "no release of that name" in capsys.readouterr().err
    assert cli("diff", str(small_qcow2), str(small_qcow2)) == 0
    assert "no package changed" in capsys.readouterr().out
