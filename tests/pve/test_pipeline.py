"""`make`, `template` and `clone` on the PVE target against the simulator (FakeBackend: nothing boots).

The golden image is a small blank qcow2 and the guest checks are stubbed (no guest runs here): what is
tested is everything imgbuild asks of PVE, including every fault the simulator can inject, the promise
that a failure leaves no VM and no seed ISO behind, and that the token secret never shows. The real
end-to-end path (a booted guest, SSH and HTTP through a jump host) is test_boot.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from builder.cli.main import main
from builder.errors import ImgbuildError
from builder.image.build import GoldenImage
from builder.image.manifest import Manifest, Package
from builder.pipeline import make as make_module
from builder.pipeline.make import MakeOptions, make
from builder.proc import run
from builder.progress import NullProgress
from builder.recipe.model import Recipe, derived_mac
from builder.targets.pve.connect import open_pve_target
from builder.targets.pve.target import PveTarget
from tests.pve.conftest import REPO, no_orphans, uploads_in, write_targets_file
from tests.pvesim.simulator import PveSimulator

SEEDS = r"-seed-[0-9a-f]{16}\.iso$"


def image_volume(volid: str) -> bool:
    return volid.startswith("local:import/")


def test_make_uploads_creates_verifies_and_forgets_the_seed(target: PveTarget, pve_sim: PveSimulator,
                                                           web_server: Recipe, stubbed: list[str],
                                                           tmp_path: Path) -> None:
    report = make(web_server, tmp_path / "out", target, MakeOptions())
    assert report.ok and stubbed == ["web-server@192.168.1.250"]
    (vmid,) = pve_sim.vm_ids()
    cfg = pve_sim.vm_config(vmid)
    assert cfg["ide2"].startswith("none,media=cdrom")  # the seed was detached ...
    assert pve_sim.volume_ids("iso") == []  # ... and deleted
    assert not target.is_running(target.find_vm("web-server"))  # type: ignore[arg-type]
    assert cfg["net0"] == f"virtio={derived_mac('web-server')},bridge=vmbr0,firewall=0"
    assert report.vm["state"] == "shut down" and report.target == "sim"
    first = [r.params["filename"] for r in uploads_in(pve_sim)]
    assert len(first) == 2 and first[0].endswith(".qcow2")

    # A second make of the unchanged recipe uploads nothing and creates nothing: the VM records the inputs it
    # was built from, so it is started (without the seed, which the first run deleted) and verified again.
    again = make(web_server, tmp_path / "out", target, MakeOptions())
    assert again.ok and again.vm["reused"] is True
    assert [r.params["filename"] for r in uploads_in(pve_sim)] == first  # no upload at all
    assert pve_sim.vm_ids() == [vmid] and "reuse" in [s.name for s in again.stages]
    assert not pve_sim.requests_matching("POST", r"/nodes/pve/qemu$")[1:]  # created once only
    assert stubbed == ["web-server@192.168.1.250"] * 2

    # --rebuild: a new VM. The golden image is already there; only the seed goes up again (it holds the
    # guest's private host key, so the first run deleted it after verification).
    rebuilt = make(web_server, tmp_path / "out", target, MakeOptions(rebuild=True))
    assert rebuilt.ok and rebuilt.vm["reused"] is False
    second = [r.params["filename"] for r in uploads_in(pve_sim)][len(first):]
    assert second == [first[1]]  # byte-identical seed, same content-addressed name; no image upload
    assert rebuilt.cache["staged"]["image"]["uploaded"] is False
    assert len(pve_sim.vm_ids()) == 1  # the earlier VM was replaced


def test_refresh_image_makes_a_new_vm_and_replaces_the_old_upload(  # type: ignore[no-untyped-def]
        target: PveTarget, pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str], small_qcow2: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """make --refresh-image (nightly rebuilds): the image is built again from the mirror's current packages;
    a VM built on the old image is no longer up to date, and the old upload goes."""
    cached = [small_qcow2]
    refreshed = tmp_path / "refreshed.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", refreshed, "2G"])  # other bytes than the first build

    def golden(spec, refresh=False, progress=None):  # type: ignore[no-untyped-def]
        if refresh:
            cached[0] = refreshed  # what build_golden_image does: the new build replaces the cached one
        return GoldenImage(cached[0], "test-key", cached=not refresh)

    monkeypatch.setattr(make_module, "build_golden_image", golden)
    first = make(web_server, tmp_path / "out", target, MakeOptions())
    old_image = first.cache["staged"]["image"]["ref"]

    fresh = make(web_server, tmp_path / "out", target, MakeOptions(refresh_image=True))
    assert fresh.ok and fresh.cache["image"]["reused"] is False and fresh.vm["reused"] is False
    new_image = fresh.cache["staged"]["image"]["ref"]
    assert new_image != old_image and fresh.cache["staged"]["image"]["uploaded"] is True
    assert new_image in pve_sim.volume_ids() and old_image not in pve_sim.volume_ids()
    assert len(pve_sim.vm_ids()) == 1  # the VM on the old image was replaced

    # the refreshed image is now the cached one: the next plain make finds the VM up to date
    again = make(web_server, tmp_path / "out", target, MakeOptions())
    assert again.ok and again.vm["reused"] is True
    assert stubbed == ["web-server@192.168.1.250"] * 3


def test_refresh_with_no_new_package_keeps_the_vm_and_uploads_nothing(  # type: ignore[no-untyped-def]
        target: PveTarget, pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str], small_qcow2: Path,
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Golden images are reproducible (tests/image/test_reproducible*.py): a refresh that finds no new package
    gives the same bytes, so the VM is up to date and nothing goes to PVE; a refresh with new packages names them."""
    last_night = Manifest("test-key", "trixie", (Package("openssh-server", "1:10.0p1-7", "amd64", "openssh"),),
                          ("openssh-server",))
    tonight = Manifest("test-key", "trixie", (Package("openssh-server", "1:10.0p1-7+deb13u1", "amd64", "openssh"),),
                       ("openssh-server",))
    refreshed = tmp_path / "refreshed.qcow2"
    run(["qemu-img", "create", "-q", "-f", "qcow2", refreshed, "2G"])
    mirror = [last_night]  # what the mirror has tonight

    def golden(spec, refresh=False, progress=None):  # type: ignore[no-untyped-def]
        if not refresh:
            return GoldenImage(small_qcow2, "test-key", cached=True, manifest=last_night)
        same = mirror[0] == last_night  # what build_golden_image finds: same packages, same bytes, file kept
        return GoldenImage(small_qcow2 if same else refreshed, "test-key", cached=False, manifest=mirror[0],
                           previous=last_night, identical=same)

    notes: list[str] = []

    class Notes(NullProgress):
        def note(self, text: str) -> None:
            notes.append(text)

    monkeypatch.setattr(make_module, "build_golden_image", golden)
    first = make(web_server, tmp_path / "out", target, MakeOptions())
    uploaded = uploads_in(pve_sim)

    quiet = make(web_server, tmp_path / "out", target, MakeOptions(refresh_image=True), Notes())
    assert quiet.ok and quiet.vm["reused"] is True and quiet.cache["image"]["identical"] is True
    assert uploads_in(pve_sim) == uploaded and "staged" not in quiet.cache  # not one byte uploaded
    assert "image refreshed: no package changed (the same bytes: nothing to rebuild or upload)" in notes
    assert quiet.cache["image"]["changes"]["summary"] == "no package changed"

    mirror[0] = tonight
    updated = make(web_server, tmp_path / "out", target, MakeOptions(refresh_image=True), Notes())
    assert updated.ok and updated.vm["reused"] is False and updated.cache["staged"]["image"]["uploaded"] is True
    assert "image refreshed: 1 package upgraded: openssh-server 1:10.0p1-7 -> 1:10.0p1-7+deb13u1" in notes
    assert first.ok and len(pve_sim.vm_ids()) == 1  # the VM on last night's image was replaced


FAULTS = {
    "create-503": (lambda sim: sim.faults.http_error("POST", r"/qemu$", status=503, message="cluster not ready"),
                   "POST /nodes/pve/qemu failed: cluster not ready"),
    "create-task-fails": (lambda sim: sim.faults.fail_task("qmcreate", message="unable to create image: no space",
                                                          log=("lvcreate failed",)),
                          "failed on Proxmox VE: unable to create image: no space"),
    "create-task-hangs": (lambda sim: sim.faults.hang_task("qmcreate"), r"did not finish within 2s \(task UPID:pve:"),
    "start-task-fails": (lambda sim: sim.faults.fail_task("qmstart", message="start failed: QEMU exited with code 1"),
                         "start of VM 100 .*failed on Proxmox VE: start failed"),
    "start-task-hangs": (lambda sim: sim.faults.hang_task("qmstart"), r"start of VM 100 .*did not finish within 2s"),
    "agent-not-running": (lambda sim: sim.faults.agent_not_running(count=None),
                          "no address from the guest agent .*QEMU guest agent is not running"),
    "upload-403": (lambda sim: sim.faults.http_error("POST", r"/upload$", status=403, message="Permission check failed"),
                   "denied POST /nodes/pve/storage/local/upload"),
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_faults_end_in_a_clear_error_and_no_orphans(fault: str, sim_env: PveSimulator, web_server: Recipe,
                                                    stubbed: list[str], tmp_path: Path) -> None:
    write_targets_file(Path(os.environ["IMGBUILD_TARGETS"]), sim_env, task_timeout=2)

    target = open_pve_target("sim", tmp_path)
    plant, expect = FAULTS[fault]
    rule = plant(sim_env)
    with pytest.raises(ImgbuildError, match=expect):
        make(web_server, tmp_path / "out", target, MakeOptions())
    assert rule.hits >= 1
    no_orphans(sim_env, keep=image_volume)
    report = json.loads((tmp_path / "out" / "web-server" / "report.json").read_text())
    assert report["ok"] is False and report["error"]


@pytest.mark.parametrize("fault", ["drop-upload", "get-503", "agent-late"])
def test_transient_faults_are_retried(fault: str, target: PveTarget, pve_sim: PveSimulator, web_server: Recipe,
                                      stubbed: list[str], tmp_path: Path) -> None:
    if fault == "drop-upload":
        rule = pve_sim.faults.drop_upload(after_bytes=4096, path=r"/upload$")
    elif fault == "get-503":
        rule = pve_sim.faults.http_error("GET", r"/status/current$", status=503, message="busy", count=2)
    else:
        rule = pve_sim.faults.agent_not_running(count=1)
    target._sleep = lambda s: None  # type: ignore[method-assign]
    assert make(web_server, tmp_path / "out", target, MakeOptions()).ok
    assert rule.hits >= 1


def test_keep_on_failure_keeps_vm_and_seed(target: PveTarget, pve_sim: PveSimulator, web_server: Recipe,
                                           stubbed: list[str], tmp_path: Path) -> None:
    pve_sim.faults.fail_task("qmstart", message="start failed")
    with pytest.raises(ImgbuildError):
        make(web_server, tmp_path / "out", target, MakeOptions(keep_on_failure=True))
    assert len(pve_sim.vm_ids()) == 1 and any(v.endswith(".iso") for v in pve_sim.volume_ids())
    target.destroy(target.find_vm("web-server"))  # type: ignore[arg-type]


def test_rebuild_over_a_vm_that_still_holds_the_same_seed(target: PveTarget, pve_sim: PveSimulator,
                                                          web_server: Recipe, stubbed: list[str],
                                                          tmp_path: Path) -> None:
    """The kept VM's seed volume is the very one the rebuild stages (same bytes, same name); destroying the
    kept VM deletes it, so the rebuild stages it again rather than creating a VM on a deleted volume."""
    pve_sim.faults.fail_task("qmstart", message="start failed")
    with pytest.raises(ImgbuildError):
        make(web_server, tmp_path / "out", target, MakeOptions(keep_on_failure=True))
    (seed,) = pve_sim.volume_ids("iso")
    rebuilt = make(web_server, tmp_path / "out", target, MakeOptions(rebuild=True))
    assert rebuilt.ok and stubbed == ["web-server@192.168.1.250"]
    assert [r.params["filename"] for r in uploads_in(pve_sim)].count(seed.split("/", 1)[1]) == 2
    assert pve_sim.volume_ids("iso") == []  # verified: forgotten


def test_secret_never_shows(target: PveTarget, pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str],
                            tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    secret = pve_sim.token.secret
    caplog.set_level(logging.DEBUG)
    assert make(web_server, tmp_path / "out", target, MakeOptions()).ok
    pve_sim.faults.fail_task("qmstart", message="start failed")
    with pytest.raises(ImgbuildError) as err:
        make(web_server, tmp_path / "out", target, MakeOptions())
    out, errout = capfd.readouterr()
    seen = [out, errout, err.value.message, err.value.detail, repr(target.config), caplog.text]
    seen += [r.getMessage() for r in caplog.records]
    seen += [p.read_text(errors="replace") for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert not [s for s in seen if secret in s]
    assert len(caplog.records) > 10  # debug logging was on (urllib3, proxmoxer, imgbuild)


@pytest.fixture
def cli_out(sim_env: PveSimulator, tmp_path: Path) -> Iterator[Path]:
    out = tmp_path / "out"
    yield out


def test_template_and_linked_clone_commands(cli_out: Path, sim_env: PveSimulator, stubbed: list[str],
                                            capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(cli_out)]
    assert main([*base, "make", "web-server", "--target", "sim"]) == 0
    assert main([*base, "clone", "web-server", "--name", "web-2", "--linked", "--target", "sim"]) == 1
    assert "a linked clone needs a template" in capsys.readouterr().err
    # template: the verified VM is copied into a release template, proven by a linked clone of it
    assert main([*base, "template", "web-server", "--target", "sim"]) == 0
    release = json.loads((cli_out / "web-server" / "release.json").read_text())["release"]["name"]
    assert f"web-server: released {release} on sim" in capsys.readouterr().out
    assert main([*base, "clone", "web-server", "--name", "web-2", "--ip", "192.168.1.251/24", "--linked",
                 "--target", "sim"]) == 0
    assert f"linked clone of {release} verified on sim" in capsys.readouterr().out
    assert stubbed == ["web-server@192.168.1.250", f"{release}-check@192.168.1.250", "web-2@192.168.1.251"]
    # the clone's own seed: its hostname, MAC, address, host key and instance-id
    web, web2 = cli_out / "web-server", cli_out / "web-2"
    assert "web-2" in (web2 / "user-data").read_text()
    network = (web2 / "network-config").read_text()
    assert derived_mac("web-2").lower() in network and "192.168.1.251/24" in network
    assert (web2 / "ssh_host_ed25519_key.pub").read_text() != (web / "ssh_host_ed25519_key.pub").read_text()
    assert _instance_id(web2) != _instance_id(web)
    uploads = [r.params["filename"] for r in uploads_in(sim_env)]
    assert uploads[-1].startswith("web-2-seed-")
    vms = {v["config"]["name"]: v for v in sim_env.vms()}
    assert vms[release]["config"]["template"] == "1" and "template" not in vms["web-server"]["config"]
    clone_cfg = vms["web-2"]["config"]
    assert clone_cfg["net0"].startswith(f"virtio={derived_mac('web-2')},")
    assert clone_cfg["ipconfig0"] == "ip=192.168.1.251/24,gw=192.168.1.1"
    assert clone_cfg["ide2"].startswith("none,media=cdrom") and "base-" in clone_cfg["virtio0"]
    assert json.loads((web2 / "report.json").read_text())["method"] == "linked clone"
    # full clone without --ip of a static recipe: a warning, the recipe's address
    assert main([*base, "clone", "web-server", "--name", "web-3", "--target", "sim"]) == 0
    assert "no --ip given" in capsys.readouterr().err
    for name in ("web-3", "web-2", release, "web-server"):
        assert main([*base, "destroy", name, "--target", "sim"]) == 0
    no_orphans(sim_env, keep=image_volume)


def test_clone_refuses_ip_for_dhcp_recipes(cli_out: Path, sim_env: PveSimulator,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(cli_out)]
    assert main([*base, "clone", "golden-base", "--name", "g2", "--ip", "10.0.0.5/24", "--target", "sim"]) == 2
    assert "--ip is for recipes with a static address" in capsys.readouterr().err


def _instance_id(out_dir: Path) -> str:
    for line in (out_dir / "meta-data").read_text().splitlines():
        if line.startswith("instance-id"):
            return line.split(":", 1)[1].strip()
    raise AssertionError("no instance-id")


def test_installer_method_on_pve(target: PveTarget, pve_sim: PveSimulator, web_server: Recipe, stubbed: list[str],
                                 tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Blank disk + installer ISO + seed ISO; the 'installer' powers the VM off; the installer ISO is ejected and
    the VM boots from its disk. (ISOs stubbed: building the real installer ISO is tests/iso's job.)"""
    from types import SimpleNamespace

    def isos(out_dir, **kw):  # type: ignore[no-untyped-def]
        seed, installer = out_dir / "seed.iso", out_dir / "installer.iso"
        seed.write_bytes(b"seed" * 4096)
        installer.write_bytes(b"installer" * 8192)
        return SimpleNamespace(seed=seed, installer=installer, sha256={
            "seed.iso": hashlib.sha256(seed.read_bytes()).hexdigest(),
            "installer.iso": hashlib.sha256(installer.read_bytes()).hexdigest()})

    monkeypatch.setattr(make_module, "build_recipe_isos", isos)
    monkeypatch.setattr(make_module, "SYSLOG_PORT", 0)  # a free port: never collide with another run
    pve_sim.backend.power_off_after(100, 1.0)  # the "installer" finishes a second after the first start
    report = make(web_server, tmp_path / "out", target, MakeOptions(method="installer"))
    assert report.ok and report.method == "installer"
    (create,) = pve_sim.requests_matching("POST", r"^/nodes/pve/qemu$")
    assert create.params["virtio0"] == "local-lvm:8,cache=none"  # blank
    assert create.params["ide2"].startswith("local:iso/web-server-installer-")
    assert create.params["ide3"].startswith("local:iso/web-server-seed-")
    assert create.params["boot"] == "order=virtio0;ide2;ide3"
    assert len(pve_sim.backend.starts) == 2  # installer boot, then the installed system
    cfg = pve_sim.vm_config(100)
    assert cfg["ide2"].startswith("none,media=cdrom") and cfg["ide3"].startswith("none,media=cdrom")
    # the installer ISO stays (content-addressed, reused next time); the seed is gone
    assert [v for v in pve_sim.volume_ids("iso")] == [create.params["ide2"].split(",")[0]]
    target.destroy(target.find_vm("web-server"))  # type: ignore[arg-type]


def test_clone_name_must_be_a_host_name(cli_out: Path, sim_env: PveSimulator, capsys: pytest.CaptureFixture[str]) -> None:
    base = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(cli_out)]
    assert main([*base, "clone", "web-server", "--name", "web_2", "--target", "sim"]) == 2
    assert "must be a host name" in capsys.readouterr().err
