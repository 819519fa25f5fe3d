"""Package manifests of golden images: read from a real dpkg database with dpkg-query, read back out of a
finished qcow2 without booting it, and compared in Debian's version order (checked against dpkg itself)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from builder.image import ImageSpec, package_manifest
from builder.image.build import image_path
from builder.image.manifest import (
    QUERY_FORMAT,
    Manifest,
    Package,
    diff_manifests,
    manifest_path,
    parse_dpkg_query,
    query_admindir,
    read_manifest,
    recover_manifest,
    write_manifest,
)
from builder.proc import run
from builder.progress import NullProgress

HOST_DPKG = Path("/var/lib/dpkg")


def host_query() -> str:
    return run(["dpkg-query", "-W", f"-f={QUERY_FORMAT}"]).stdout.decode()


def host_version(name: str) -> str:
    return run(["dpkg-query", "-W", "-f=${Version}", name]).stdout.decode()


def dpkg_orders(a: str, op: str, b: str) -> bool:
    return run(["dpkg", "--compare-versions", a, op, b], check=False).returncode == 0


# --- reading dpkg's database ---------------------------------------------------------------------


def test_the_hosts_real_dpkg_database_reads_as_installed_packages_with_sources() -> None:
    packages = query_admindir(HOST_DPKG)
    assert packages == parse_dpkg_query(host_query())
    by_name = {p.name: p for p in packages}
    assert by_name["dpkg"] == Package("dpkg", host_version("dpkg"), "amd64", "dpkg")
    assert by_name["libc6"].source == "glibc"  # binary and source names differ
    assert by_name["openssh-client"].source == "openssh"
    assert by_name["adduser"].arch == "all"
    assert list(packages) == sorted(packages)
    installed = run(["dpkg-query", "-W", "-f=${db:Status-Abbrev}\n"]).stdout.decode().split("\n")
    assert len(packages) == sum(1 for s in installed if s.startswith("ii"))


def test_packages_removed_but_not_purged_are_not_in_the_manifest(tmp_path: Path) -> None:
    # A real status file with one package in dpkg's "rc" state (removed, config files left).
    status = (HOST_DPKG / "status").read_text()
    stanzas = status.split("\n\n")
    index = next(i for i, s in enumerate(stanzas) if s.startswith("Package: adduser\n"))
    stanzas[index] = re.sub(r"^Status: .*$", "Status: deinstall ok config-files", stanzas[index], flags=re.M)
    admindir = tmp_path / "dpkg"
    (admindir / "updates").mkdir(parents=True)
    (admindir / "status").write_text("\n\n".join(stanzas))
    names = {p.name for p in query_admindir(admindir)}
    assert "adduser" not in names and "dpkg" in names


def test_unexpected_dpkg_query_output_is_an_error_not_a_guess() -> None:
    from builder.errors import ImgbuildError

    with pytest.raises(ImgbuildError, match="unexpected dpkg-query output"):
        parse_dpkg_query("installed\tfoo\t1.0\n")


# --- version order ------------------------------------------------------------------------------

# (old, new, expected): each also checked against `dpkg --compare-versions` on this host.
VERSION_CASES = [
    ("1:10.0p1-7", "1:10.0p1-7+deb13u1", "upgraded"),  # a stable update
    ("2.36-9+deb12u4", "2.36-9+deb12u10", "upgraded"),  # numeric, not string, order (u10 > u4)
    ("2.0-1", "1:1.0-1", "upgraded"),  # an epoch outranks the upstream version
    ("1:2.0-1", "2.0-1", "downgraded"),  # losing the epoch
    ("1.0~rc1-1", "1.0-1", "upgraded"),  # ~ sorts before the release
    ("1.0-1", "1.0-1~bpo12+1", "downgraded"),  # a backport sorts before its base version
    ("1.0-1", "1.0-1+b1", "upgraded"),  # binNMU
    ("6.12.57-1", "6.12.9-1", "downgraded"),  # 57 > 9
    ("1.0", "0:1.0", "unchanged"),  # epoch 0 spelled out
    ("1.0-1", "1.0-1", "unchanged"),
]


def manifest(*packages: tuple[str, str], requested: tuple[str, ...] = ()) -> Manifest:
    return Manifest("key", "trixie", tuple(sorted(Package(n, v, "amd64", n) for n, v in packages)), requested)


@pytest.mark.parametrize(("old", "new", "expected"), VERSION_CASES)
def test_versions_compare_in_debians_order(old: str, new: str, expected: str) -> None:
    dpkg_says = "upgraded" if dpkg_orders(new, "gt", old) else "downgraded" if dpkg_orders(new, "lt", old) else "unchanged"
    assert dpkg_says == expected  # the table itself agrees with dpkg
    diff = diff_manifests(manifest(("p", old)), manifest(("p", new)))
    seen = "upgraded" if diff.upgraded else "downgraded" if diff.downgraded else "unchanged"
    assert seen == expected
    assert bool(diff) == (expected != "unchanged")


def test_added_removed_upgraded_downgraded_are_told_apart() -> None:
    old = manifest(("a", "1.0"), ("b", "1.0"), ("c", "1.0"), ("d", "2.0"))
    new = manifest(("b", "1.0"), ("c", "1.1"), ("d", "1.9"), ("e", "0.1"))
    diff = diff_manifests(old, new)
    assert [p.name for p in diff.added] == ["e"]
    assert [p.name for p in diff.removed] == ["a"]
    assert [(c.name, c.old, c.new) for c in diff.upgraded] == [("c", "1.0", "1.1")]
    assert [(c.name, c.old, c.new) for c in diff.downgraded] == [("d", "2.0", "1.9")]
    assert diff.lines() == ["+ e 0.1", "- a 1.0", "^ c 1.0 -> 1.1", "v d 2.0 -> 1.9"]
    assert diff.summary() == ("1 package upgraded: c 1.0 -> 1.1; 1 package downgraded: d 2.0 -> 1.9; "
                              "1 package added: e 0.1; 1 package removed: a 1.0")
    assert json.loads(json.dumps(diff.as_dict()))["summary"] == diff.summary()


def test_summary_names_a_requested_package_among_many() -> None:
    names = ["libssl3t64", "openssl", "openssh-client", "openssh-sftp-server", "libc6", "libc-bin", "tzdata",
             "openssh-server", "libsystemd0", "systemd", "udev", "libudev1", "base-files", "curl"]
    old = manifest(*[(n, "1:10.0p1-7") for n in names], requested=("openssh-server", "systemd-sysv"))
    new = manifest(*[(n, "1:10.0p1-7+deb13u1") for n in names], requested=("openssh-server", "systemd-sysv"))
    assert diff_manifests(old, new).summary() == (
        "14 packages upgraded, including openssh-server 1:10.0p1-7 -> 1:10.0p1-7+deb13u1")
    # Without requested names: a program before a library, then by name.
    plain = diff_manifests(manifest(*[(n, "1") for n in names]), manifest(*[(n, "2") for n in names]))
    assert plain.summary() == "14 packages upgraded, including base-files 1 -> 2"


def test_identical_manifests_say_no_package_changed() -> None:
    packages = parse_dpkg_query(host_query())
    a = Manifest("k1", "trixie", packages)
    diff = diff_manifests(a, Manifest("k2", "trixie", packages))
    assert not diff and diff.summary() == "no package changed" and diff.lines() == []


# --- stored beside the image, and recovered from one ---------------------------------------------


def test_manifest_round_trips_beside_its_image(tmp_path: Path) -> None:
    image = tmp_path / "trixie-seabios-abc.qcow2"
    assert read_manifest(image) is None
    m = Manifest("abc", "trixie", parse_dpkg_query(host_query()), ("openssh-server",))
    assert write_manifest(image, m) == tmp_path / "trixie-seabios-abc.manifest.json"
    assert read_manifest(image) == m
    manifest_path(image).write_text("{not json")
    assert read_manifest(image) is None
    manifest_path(image).write_text(json.dumps({**m.as_dict(), "format": 99}))
    assert read_manifest(image) is None  # a layout this builder does not know


def make_disk(tmp_path: Path, label: str) -> Path:
    """A small real disk (partition table, ext4 root holding this host's dpkg database) as qcow2."""
    tree = tmp_path / "tree"
    (tree / "var/lib/dpkg/updates").mkdir(parents=True)
    shutil.copy(HOST_DPKG / "status", tree / "var/lib/dpkg/status")
    raw = tmp_path / "disk.raw"
    size_mib = 80
    with open(raw, "wb") as fh:
        fh.truncate(size_mib << 20)
    if label == "dos":
        script, start = "label: dos\nstart=2048, size=120000, type=83, bootable\n", 2048
    else:  # like an OVMF image: an ESP first, the root after it
        script = ("label: gpt\nstart=2048, size=20480, type=C12A7328-F81F-11D2-BA4B-00A0C93EC3B8\n"
                  "start=22528, size=120000, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n")
        start = 22528
    run(["sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", raw], input=script.encode())
    run(["mkfs.ext4", "-q", "-F", "-E", f"offset={start * 512}", "-d", tree, raw, f"{120000 // 2}k"])
    qcow = tmp_path / "image.qcow2"
    run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", raw, qcow])
    raw.unlink()
    return qcow


@pytest.mark.parametrize("label", ["dos", "gpt"])
def test_an_image_without_manifest_gets_one_read_from_its_disk(tmp_path: Path, label: str) -> None:
    qcow = make_disk(tmp_path, label)
    recovered = recover_manifest(qcow, image_key="k", release="trixie", requested=("dpkg",))
    assert recovered.packages == query_admindir(HOST_DPKG)
    assert read_manifest(qcow) == recovered  # written beside it
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.manifest.json", "image.qcow2", "tree"]


def test_a_cached_image_without_manifest_gets_one_on_reuse(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    spec = ImageSpec()
    cached = image_path(spec)
    shutil.move(make_disk(tmp_path, "dos"), cached)
    found = package_manifest(spec, cached)
    assert found is not None and found.release == "trixie" and found.get("dpkg") is not None
    assert "openssh-server" in found.requested
    assert read_manifest(cached) == found
    assert not [p for p in cached.parent.iterdir() if p.name.startswith(".build-")]  # work dir removed


def test_an_unreadable_image_has_no_manifest_and_says_why(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("IMGBUILD_CACHE", str(tmp_path / "cache"))
    spec = ImageSpec()
    cached = image_path(spec)
    run(["qemu-img", "create", "-q", "-f", "qcow2", cached, "1G"])  # no partition table at all
    notes: list[str] = []

    class Notes(NullProgress):
        def note(self, text: str) -> None:
            notes.append(text)

    assert package_manifest(spec, cached, Notes()) is None
    assert notes and "no package manifest for" in notes[0] and "no Linux partition" in notes[0]
