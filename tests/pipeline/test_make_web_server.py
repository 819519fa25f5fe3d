"""imgbuild make web-server on the local target: the README's main job, verified for real.

One VM (kept with --keep) serves the module, in file order: what the report says, what the local target
promises (TCG, loopback-only forwards, reattaching, screenshots, media changes), verify again, make again
(up to date), a cold boot without the seed, a tampered known_hosts that must fail, destroy.
"""

from __future__ import annotations

import json
import shlex
import subprocess
from pathlib import Path

import pytest

from builder.iso.seed import build_seed_iso, content_epoch
from builder.targets.base import VM
from builder.targets.local import LocalTarget, LocalVM, choose_accel
from builder.targets.local.qmp import QMPClient
from builder.verify.checks import CLOUD_INIT_RESULT, cloud_init_status
from tests.local.guest import png_pixels
from tests.pipeline.conftest import check_named, qemu_processes

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def made(imgbuild):
    result = imgbuild("make", "web-server", "--keep")
    assert result.returncode == 0, result.stderr[-3000:]
    return result, imgbuild.report("web-server")


def test_make_ends_in_a_verified_vm(made) -> None:
    result, report = made
    assert report["ok"] is True and report["failed_checks"] == []
    assert [s["name"] for s in report["stages"]] == ["check", "render", "build", "image", "stage", "create", "boot", "verify"]
    assert all(s["ok"] for s in report["stages"])
    ssh = check_named(report, "ssh")
    assert ssh["ok"] and "192.168.1.250/24" in ssh["seen"] and "cloud-init status: done" in ssh["seen"]
    http = check_named(report, "http :80/")
    assert http["ok"] and "Apache2 Debian Default Page" in http["expected"]
    assert check_named(report, "service apache2")["ok"]
    assert report["vm"]["address"] == "192.168.1.250" and report["vm"]["state"] == "running"
    names = {a["name"] for a in report["artifacts"]}
    assert {"seed.iso", "golden-image"} <= names and all(len(a["sha256"]) == 64 for a in report["artifacts"])
    assert "ssh -i" in report["access"]["ssh"] and report["access"]["urls"][0].startswith("http://127.0.0.1:")
    image = report["cache"]["image"]  # the package manifest is kept beside the golden image
    manifest = json.loads(Path(image["manifest"]).read_text())
    assert Path(image["manifest"]).parent == Path(image["path"]).parent and manifest["image_key"] == image["key"]
    assert image["packages"] == len(manifest["packages"])
    assert any(p["name"] == "apache2" for p in manifest["packages"])
    assert "verified on local" in result.stdout and "imgbuild destroy web-server" in result.stdout


def test_kept_vm_serves_the_apache_page(made) -> None:
    import requests

    _, report = made
    page = requests.get(report["access"]["urls"][0], timeout=30)
    assert page.status_code == 200 and "Apache2 Debian Default Page" in page.text


def test_status_shows_the_kept_vm_running(imgbuild, made) -> None:
    result = imgbuild("status", "--json")
    assert result.returncode == 0, result.stderr
    (row,) = [r for r in json.loads(result.stdout)["vms"] if r["name"] == "web-server"]
    assert row["state"] == "running" and row["address"] == "192.168.1.250" and row["last_job"]["ok"]


def test_verify_again(imgbuild, made) -> None:
    result = imgbuild("verify", "--json", "web-server")
    assert result.returncode == 0, result.stderr
    assert all(c["ok"] for c in json.loads(result.stdout))


def test_the_local_target_runs_it_as_promised(imgbuild, made) -> None:
    """The accelerator the probe picks on this host (KVM where it works, else TCG: a fresh probe agrees with
    the one make ran), virtio-blk with cache=none and the recipe's MAC, forwards on loopback only, and a new
    LocalTarget reattaches to the running VM from its state file."""
    verdict = choose_accel("auto", use_cache=False)
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("web-server")
    assert vm is not None and target.is_running(vm)
    assert vm.state.accel == verdict.accel, (vm.state.accel, verdict)
    argv = (Path(vm.ident) / "qemu.argv").read_text()
    accel = json.loads(argv)[json.loads(argv).index("-accel") + 1]
    if verdict.accel == "tcg":
        assert vm.state.tcg_threads == verdict.tcg_threads and accel == f"tcg,thread={verdict.tcg_threads}"
    else:
        assert accel == "kvm", accel
    assert "hostfwd=tcp:127.0.0.1:" in argv and "hostfwd=tcp::" not in argv and "hostfwd=tcp:0.0.0.0" not in argv
    assert "cache=none" in argv and "virtio-blk-pci" in argv and f"mac={vm.state.macs[0]}" in argv
    ep = target.endpoint(vm, "192.168.1.250", 22)
    assert ep.host == "127.0.0.1" and f"-p {ep.port} " in made[1]["access"]["ssh"]
    assert target.console_log(vm) == imgbuild.out / "web-server" / "console.log"


def test_the_guest_has_an_identity_of_its_own(imgbuild, made) -> None:
    """Over the access command make printed (pinned host key): the golden image's empty machine-id was
    filled in on first boot, and ssh and the guest agent run."""
    _, report = made
    cmd = [*shlex.split(report["access"]["ssh"]), "-o", "BatchMode=yes",
           "cat /etc/machine-id; hostname; systemctl is-active ssh qemu-guest-agent"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=imgbuild.root)
    assert proc.returncode == 0, proc.stderr
    machine_id, hostname, *active = proc.stdout.split()
    assert len(machine_id) == 32 and hostname == "web-server" and active == ["active", "active"]


def guest(imgbuild, report, command: str) -> str:
    """Run *command* in the running guest over the access command make printed (pinned host key), on the
    port the local target forwards now (a restart picks new ones)."""
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("web-server")
    assert vm is not None
    port = target.endpoint(vm, "192.168.1.250", 22).port
    argv = shlex.split(report["access"]["ssh"])
    argv[argv.index("-p") + 1] = str(port)
    cmd = [*argv, "-o", "BatchMode=yes", command]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=imgbuild.root)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def test_the_first_boot_did_only_what_the_recipe_needs(imgbuild, made) -> None:
    """What the golden image baked in (builder/image/firstboot.py), seen in the guest after its first boot:
    no fsck of the fresh root filesystem, only the cloud-init modules the seed uses, sshd's password
    setting from the image (cloud-init's set_passwords did not run), the time zone, no wait for a
    network that is configured already, and no cache refresh for an update of /usr that never happened."""
    _, report = made
    assert guest(imgbuild, report, "systemctl show -p ConditionResult --value systemd-fsck-root").strip() == "no"
    refreshes = ("ldconfig", "systemd-journal-catalog-update", "systemd-sysusers", "systemd-hwdb-update")
    for unit in refreshes:  # the condition was evaluated on this boot and said no
        shown = guest(imgbuild, report, f"systemctl show -p ConditionResult -p ConditionTimestampMonotonic {unit}")
        props = dict(line.split("=", 1) for line in shown.splitlines() if "=" in line)
        assert props["ConditionResult"] == "no" and int(props["ConditionTimestampMonotonic"]) > 0, (unit, props)
    assert guest(imgbuild, report, "test -s /etc/ld.so.cache && echo cached").strip() == "cached"
    ran = set(guest(imgbuild, report, "sudo grep -o 'Running module [a-z_]*' /var/log/cloud-init.log "
                                      "| cut -d' ' -f3 | sort -u").split())
    kept = {"write_files", "set_hostname", "update_hostname", "update_etc_hosts", "users_groups", "ssh",
            "runcmd", "scripts_user", "final_message"}  # builder/image/firstboot.py; Debian's list has ~50
    assert {"set_hostname", "users_groups", "ssh"} <= ran <= kept, ran
    assert "passwordauthentication no" in guest(imgbuild, report, "sudo sshd -T").splitlines()
    assert guest(imgbuild, report, "timedatectl show -p Timezone --value").strip() == "Etc/UTC"
    chain = guest(imgbuild, report, "systemd-analyze critical-chain multi-user.target --no-pager")
    assert "systemd-fsck-root" not in chain and "wait-online" not in chain, chain
    assert "imgbuild: web-server is up after" in guest(imgbuild, report, "sudo cat /var/log/cloud-init-output.log")


def test_the_cloud_init_verdict_agrees_with_cloud_inits_own_status(imgbuild, made) -> None:
    """The ssh check reads the files `cloud-init status` reads instead of running it (seconds of Python
    start-up under TCG): in the guest both say the same."""
    _, report = made
    ours = cloud_init_status(guest(imgbuild, report, CLOUD_INIT_RESULT))
    theirs = guest(imgbuild, report, "cloud-init status 2>/dev/null | head -1").strip()
    assert ours == theirs == "status: done"


def test_screendump_and_media_change(imgbuild, made, tmp_path) -> None:
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("web-server")
    assert vm is not None
    shot = target.screenshot(vm, tmp_path / "screen.png")
    width, height, colours = png_pixels(shot.read_bytes())
    assert width >= 640 and height >= 400 and len(colours) > 1, "screenshot is blank"

    assert cdrom_file(vm) is None  # make detached the seed after verifying
    files = {"meta-data": b"instance-id: media-test\n", "user-data": b"#cloud-config\n"}
    iso = build_seed_iso(files, tmp_path / "media.iso", epoch=content_epoch(files))
    staged = target.stage(iso, "iso", label="media-test")
    try:
        target.set_cdrom(vm, 0, staged)
        assert cdrom_file(vm) == staged.ref
        target.set_cdrom(vm, 0, None)
        assert cdrom_file(vm) is None
    finally:
        target.unstage(staged)


def test_make_again_finds_the_vm_up_to_date(imgbuild, made) -> None:
    """An unchanged recipe: nothing is built, staged or created; the VM is verified again, then shut down."""
    result = imgbuild("make", "web-server")
    assert result.returncode == 0, result.stderr[-3000:]
    report = imgbuild.report("web-server")
    assert [s["name"] for s in report["stages"]] == ["check", "render", "build", "image", "reuse", "boot", "verify"]
    assert report["cache"]["image"]["reused"] is True and report["vm"]["reused"] is True
    assert "staged" not in report["cache"] and report["ok"] and report["vm"]["state"] == "shut down"
    assert "is up to date on local" in result.stderr
    console = (imgbuild.out / "web-server" / "console.log").read_text(errors="replace")
    assert "reboot: Power down" in console, "the guest did not power off cleanly (ACPI)"


def test_identity_survives_a_reboot_without_the_seed(imgbuild, made) -> None:
    """make removed the seed ISO (it holds the private host key); a cold boot must keep address and key.
    (The VM is shut down here, whatever ran before: the test stands on its own.)"""
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("web-server")
    assert isinstance(vm, LocalVM) and vm.state and not any(vm.state.cdroms), vm
    target.shutdown(vm)
    assert not target.is_running(vm)
    result = imgbuild("verify", "--json", "--keep", "web-server")  # starts it again, and keeps it running
    assert result.returncode == 0, result.stdout + result.stderr[-2000:]
    checks = {c["check"]: c for c in json.loads(result.stdout)}
    assert checks["ssh"]["ok"] and "192.168.1.250/24" in checks["ssh"]["seen"]
    # Not the first boot any more: the root filesystem is checked again, as on any Debian system.
    assert guest(imgbuild, made[1], "systemctl show -p ConditionResult --value systemd-fsck-root").strip() == "yes"


def test_tampered_known_hosts_fails_ssh(imgbuild, made, tmp_path) -> None:
    known = imgbuild.out / "web-server" / "known_hosts"
    original = known.read_text()
    other = (tmp_path / "k")
    import subprocess

    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    fields = original.split()
    known.write_text(f"{fields[0]} {other.with_suffix('.pub').read_text().split()[0]} "
                     f"{other.with_suffix('.pub').read_text().split()[1]}\n")
    try:
        result = imgbuild("verify", "web-server")
        assert result.returncode == 1
        assert "FAIL ssh" in result.stdout and "does not match" in result.stdout
        assert "Traceback" not in result.stderr
    finally:
        known.write_text(original)


def test_destroy_removes_the_vm(imgbuild, made) -> None:
    target = LocalTarget(imgbuild.out)
    vm = target.find_vm("web-server")
    assert vm is not None
    if not target.is_running(vm):  # a running VM, whichever tests ran before
        target.start(vm)
    assert qemu_processes(imgbuild.out)
    result = imgbuild("destroy", "web-server")
    assert result.returncode == 0 and "destroyed" in result.stdout
    assert qemu_processes(imgbuild.out) == []
    assert not (imgbuild.out / "web-server" / "vm").exists()


def cdrom_file(vm: VM) -> str | None:
    with QMPClient(Path(vm.state.sockdir) / "qmp.sock").connect() as qmp:
        for dev in qmp.execute("query-block"):
            if dev.get("qdev", "").endswith("cdrom0") or dev.get("device") == "drive-cd0":
                inserted = dev.get("inserted")
                return inserted["file"] if inserted else None
    raise AssertionError("no cdrom0 in query-block")
