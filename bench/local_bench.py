"""Time the golden image build and a local boot of the web-server image, phase by phase.

    .venv/bin/python bench/local_bench.py [--fresh]

--fresh also builds the image into an empty cache (cold: every .deb downloaded) and into a cache that
only has the .debs (warm apt cache). Prints a Markdown table (used for bench/local.md).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.cachedir import cache_root
from builder.image import build_golden_image, image_manifest
from builder.targets.base import DiskSpec, GuestNetwork, NicSpec, VMSpec
from builder.targets.local import LocalTarget, choose_accel
from tests.local.conftest import WEB_SPEC
from tests.local.guest import KeyPair, http_get, ssh_run, static_network, user_data, write_seed

rows: list[tuple[str, float]] = []


def record(what: str, secs: float) -> None:
    rows.append((what, secs))
    print(f"{what}: {secs:.1f}s", file=sys.stderr, flush=True)


def timed(what: str, fn, *args, **kwargs):
    t = time.monotonic()
    result = fn(*args, **kwargs)
    record(what, time.monotonic() - t)
    return result


def fresh_builds() -> None:
    real = cache_root()
    for kind in ("cold", "warm apt cache"):
        with tempfile.TemporaryDirectory(prefix="imgbuild-bench-", dir=real.parent) as tmp:
            if kind != "cold":
                shutil.copytree(real / "apt-archives", Path(tmp) / "apt-archives")
            os.environ["IMGBUILD_CACHE"] = tmp
            try:
                image = timed(f"image build, fresh ({kind})", build_golden_image, WEB_SPEC)
                for phase, secs in image_manifest(image)["timings"].items():
                    record(f"  {phase}", secs)
            finally:
                os.environ.pop("IMGBUILD_CACHE", None)


def boot() -> None:
    image = timed("image build, cached", build_golden_image, WEB_SPEC)
    assert image.cached
    timed("accel probe (uncached)", choose_accel, "auto", use_cache=False)
    with tempfile.TemporaryDirectory(prefix="imgbuild-bench-out-") as out:
        target = LocalTarget(Path(out))
        host, user = KeyPair.generate(), KeyPair.generate()
        mac = "52:54:00:be:0c:01"
        seed_path = write_seed(
            Path(out) / "seed.iso", instance_id="bench-1", hostname="bench",
            user=user_data("bench", user, host), network=static_network(mac, "192.168.1.250/24", "192.168.1.1", "192.168.1.3"),
        )  # fmt: skip
        staged = timed("stage image (hash + hard link)", target.stage, image.path, "image", label="web")
        seed = target.stage(seed_path, "iso", label="seed")
        spec = VMSpec(
            name="bench", disks=(DiskSpec(8 * 1024**3, source=staged),), cdroms=(seed,), nics=(NicSpec(mac),),
            network=GuestNetwork("static", "192.168.1.250/24", "192.168.1.1", ("192.168.1.3",)), guest_ports=(22, 80),
        )  # fmt: skip
        vm = timed("create VM (overlay disk)", target.create_vm, spec)
        try:
            t0 = time.monotonic()
            target.start(vm)
            record("start QEMU (until QMP answers)", time.monotonic() - t0)
            target.guest_addresses(vm, timeout=600)
            record("QEMU start -> agent reports address", time.monotonic() - t0)
            ssh = target.endpoint(vm, "192.168.1.250", 22)
            ssh_run(ssh.port, host, user, "true", timeout=600)
            record("QEMU start -> SSH command ran", time.monotonic() - t0)
            http = target.endpoint(vm, "192.168.1.250", 80)
            http_get(http.port, timeout=600, expect="Apache2 Debian Default Page")
            record("QEMU start -> Apache default page", time.monotonic() - t0)
            timed("screenshot (QMP screendump PNG)", target.screenshot, vm, Path(out) / "shot.png")
            timed("clean shutdown (ACPI)", target.shutdown, vm, 180)
        finally:
            timed("destroy", target.destroy, vm)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--fresh", action="store_true", help="also time image builds into empty caches")
    args = parser.parse_args()
    if args.fresh:
        fresh_builds()
    boot()
    print("| phase | seconds |\n| --- | ---: |")
    for label, secs in rows:
        print(f"| {label} | {secs:.1f} |")


if __name__ == "__main__":
    main()
