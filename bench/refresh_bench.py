"""A nightly refresh on a night when Debian published nothing: its time against a cached make, and the bytes
it sends to Proxmox VE (the simulator).

    flock /tmp/heavy.lock .venv/bin/python bench/refresh_bench.py [--recipe golden-base]

Local target (real guests): `make` (builds the golden image if it is not cached), `make` again (the cached
make: the VM is up to date, started and verified), then `make --refresh-image` (the image is built again from
the mirror's current packages and compared with the cached one; the same packages give the same bytes, so the
VM is still up to date and is only verified). PVE simulator (this process; its guests are simulated, so the
checks are stubbed): `make`, then `make --refresh-image`; the simulator records every upload. Goal: the
refresh uploads 0 bytes. Prints Markdown and writes bench/results/refresh.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from builder.pipeline import make as make_module
from builder.pipeline.make import MakeOptions, make
from builder.recipe import load_recipe
from builder.targets.pve.connect import open_pve_target
from builder.verify.checks import Outcome
from tests.pve.conftest import SECRET_ENV, write_targets_file
from tests.pvesim.simulator import PveSimulator


def local_make(out: Path, recipe: str, *flags: str) -> tuple[float, dict, str]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(out), "make", recipe, *flags],
                          cwd=REPO, capture_output=True, text=True, timeout=3600)
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"make {recipe} {' '.join(flags)} failed:\n{proc.stderr[-3000:]}")
    return wall, json.loads((out / recipe / "report.json").read_text()), proc.stderr


def on_the_simulator(recipe_name: str, tmp: Path) -> dict:
    def stub_verify(recipe, known_hosts, admin_key, target, vm, address, out_dir, progress):  # type: ignore[no-untyped-def]
        return [Outcome("ssh", True, "a login", "stubbed: the simulator runs no guest")]

    make_module.verify = stub_verify  # type: ignore[assignment]
    sim = PveSimulator().start()
    try:
        write_targets_file(tmp / "targets.yaml", sim)
        os.environ.update({"IMGBUILD_TARGETS": str(tmp / "targets.yaml"), SECRET_ENV: sim.token.secret})
        os.environ.pop("PROXMOX_URL", None)
        target = open_pve_target("sim", tmp / "sim-out")
        recipe = load_recipe(recipe_name, REPO / "recipes")
        first = make(recipe, tmp / "sim-out", target, MakeOptions())
        before = sum(u["bytes"] for u in sim.uploads)
        start = time.monotonic()
        refreshed = make(recipe, tmp / "sim-out", target, MakeOptions(refresh_image=True))
        seconds = time.monotonic() - start
        sent = sum(u["bytes"] for u in sim.uploads) - before
        target.close()
        return {"first_make_uploaded": before, "refresh_seconds": round(seconds, 1), "refresh_uploaded": sent,
                "vm_reused": refreshed.vm.get("reused"), "identical": refreshed.cache["image"].get("identical"),
                "first_ok": first.ok, "refresh_ok": refreshed.ok}
    finally:
        sim.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--recipe", default="golden-base", help="the cheapest shipped recipe by default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgbuild-refresh-bench-") as tmp_name:
        tmp = Path(tmp_name)
        out = tmp / "out"
        try:
            first, first_report, _ = local_make(out, args.recipe)
            cached, cached_report, _ = local_make(out, args.recipe)
            refresh, refresh_report, refresh_log = local_make(out, args.recipe, "--refresh-image")
        finally:
            subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(out), "destroy", args.recipe],
                           cwd=REPO, capture_output=True, timeout=600)
        image_stage = next(s["seconds"] for s in refresh_report["stages"] if s["name"] == "image")
        sim = on_the_simulator(args.recipe, tmp)
    said = next((line.strip() for line in refresh_log.splitlines() if "image refreshed:" in line), "(nothing)")
    rows = [
        ("first make (golden image built unless cached)", f"{first:.0f} s",
         f"image reused: {first_report['cache']['image']['reused']}"),
        ("cached make (VM up to date: started and verified)", f"{cached:.0f} s",
         f"VM reused: {cached_report['vm']['reused']}"),
        ("make --refresh-image, no new package", f"{refresh:.0f} s",
         f"image stage {image_stage:.0f} s; VM reused: {refresh_report['vm']['reused']}; said {said!r}"),
        ("PVE simulator: first make uploaded", f"{sim['first_make_uploaded'] / 2**20:.0f} MiB", "image and seed"),
        ("PVE simulator: make --refresh-image uploaded", f"{sim['refresh_uploaded']} bytes",
         f"{sim['refresh_seconds']:.0f} s; VM reused: {sim['vm_reused']}; image identical: {sim['identical']} "
         "(goal: 0 bytes)"),
    ]
    print(f"recipe {args.recipe}\n\n| run | result | detail |\n| --- | ---: | --- |")
    for row in rows:
        print(f"| {' | '.join(row)} |")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "refresh.json").write_text(json.dumps({
        "recipe": args.recipe, "first": first, "cached": cached, "refresh": refresh, "refresh_image_stage": image_stage,
        "said": said, "simulator": sim}, indent=1) + "\n")


if __name__ == "__main__":
    main()
