"""A nightly run of every shipped recipe, -j 1 against -j 2, plus `imgbuild status` and what a release adds.

Usage (it boots guests and builds images: hold the machine's heavy lock):
    flock /tmp/heavy.lock .venv/bin/python bench/nightly_bench.py [--parts make,status,release]

- make: `imgbuild make --all --refresh-image -j 1`, then the same with -j 2, in one run (every golden image
  built again from the mirror both times, every VM booted and verified). Goal: -j 2 at most 0.6x the wall
  time of -j 1. Per recipe and stage times come from the reports, to say where the rest goes.
- status: `imgbuild status` over all recipes once the images are cached (median of 5). Goal: < 2 s.
- release: `imgbuild make golden-base --rebuild` against `imgbuild release golden-base` (cached image).
  Goal: the release adds one clone boot (and its checks), nothing else.

Images are built in a scratch cache (IMGBUILD_CACHE) seeded with hard links to the shared apt archives, so
the shared cache's images are not replaced. Writes bench/results/nightly.json and prints the tables.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


def cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine from /proc/stat: how much of the cores a run kept busy
    (other processes on the machine count too; the run's own share is what changes between -j 1 and -j 2)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return sum(fields) - idle, sum(fields)


def imgbuild(out: Path, env: dict[str, str], *args: str) -> tuple[float, subprocess.CompletedProcess[str]]:
    start = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(out), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, check=False)
    return time.monotonic() - start, proc


def summary(stdout: str) -> dict[str, Any]:
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return next(e for e in reversed(lines) if e["event"] == "summary")


def stage_table(run: dict[str, Any], out: Path) -> dict[str, dict[str, float]]:
    table = {}
    for job in run["jobs"]:
        report = json.loads((out / job["name"] / "report.json").read_text())
        table[job["name"]] = {s["name"]: s["seconds"] for s in report["stages"]}
        table[job["name"]]["verify-checks"] = sum(c.get("seconds", 0) for c in report["checks"])
        table[job["name"]]["wall"] = job["seconds"]
    return table


def bench_make(out: Path, env: dict[str, str], results: dict[str, Any]) -> None:
    for jobs in (1, 2):
        busy0, total0 = cpu_ticks()
        wall, proc = imgbuild(out / f"j{jobs}", env, "make", "--all", "--refresh-image", "-j", str(jobs), "--json")
        busy1, total1 = cpu_ticks()
        run = summary(proc.stdout)
        busy = round((busy1 - busy0) / max(1, total1 - total0), 3)
        results[f"j{jobs}"] = {"wall": round(wall, 1), "ok": run["ok"], "stages": stage_table(run, out / f"j{jobs}"),
                               "failed": {j["name"]: j["error"] for j in run["jobs"] if not j["ok"]},
                               "cpu_busy": busy}
        print(f"make --all --refresh-image -j {jobs}: {wall:.0f}s, ok={run['ok']}, cores busy {100 * busy:.0f}%",
              flush=True)
        for name, error in results[f"j{jobs}"]["failed"].items():
            print(f"  {name} FAILED: {error}", flush=True)
    ratio = results["j2"]["wall"] / results["j1"]["wall"]
    results["ratio"] = round(ratio, 3)
    print(f"-j 2 / -j 1 = {ratio:.2f} (goal <= 0.60)")
    for jobs in ("j1", "j2"):
        print(f"\n{jobs}: seconds per recipe and stage")
        stages = results[jobs]["stages"]
        names = ["image", "stage", "create", "boot", "verify", "wall"]
        print(f"{'recipe':<14}" + "".join(f"{n:>9}" for n in names))
        for recipe, row in stages.items():
            print(f"{recipe:<14}" + "".join(f"{row.get(n, 0):>9.1f}" for n in names))


def bench_status(out: Path, env: dict[str, str], results: dict[str, Any]) -> None:
    times = []
    for _ in range(5):
        wall, proc = imgbuild(out, env, "status", "--json")
        if proc.returncode != 0:
            sys.exit(f"status failed:\n{proc.stderr[-2000:]}")
        times.append(wall)
    rows = json.loads(proc.stdout)["vms"]
    results["status"] = {"median": round(statistics.median(times), 2), "all": [round(t, 2) for t in times],
                         "vms": len(rows), "up_to_date": sum(1 for r in rows if r["up_to_date"])}
    print(f"status over {len(rows)} VMs: median {statistics.median(times):.2f}s (goal < 2 s), runs {times}")


def bench_release(out: Path, env: dict[str, str], results: dict[str, Any]) -> None:
    make_wall, proc = imgbuild(out, env, "make", "golden-base", "--rebuild", "--json")
    if proc.returncode != 0:
        sys.exit(f"make golden-base failed:\n{proc.stderr[-2000:]}")
    rel_wall, proc = imgbuild(out, env, "release", "golden-base", "--json")
    if proc.returncode != 0:
        sys.exit(f"release golden-base failed:\n{proc.stderr[-2000:]}")
    report = json.loads((out / "golden-base" / "release.json").read_text())
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    check = json.loads((out / f"{report['release']['name']}-check" / "report.json").read_text())
    clone_stages = {s["name"]: s["seconds"] for s in check["stages"]}
    results["release"] = {"make_wall": round(make_wall, 1), "release_wall": round(rel_wall, 1),
                          "added": round(rel_wall - make_wall, 1), "stages": stages, "clone_stages": clone_stages}
    print(f"make golden-base --rebuild: {make_wall:.0f}s; release golden-base: {rel_wall:.0f}s "
          f"(+{rel_wall - make_wall:.0f}s); release stages {stages}; the clone's stages {clone_stages}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="make,status,release")
    parser.add_argument("--keep-dir", type=Path, help="use (and keep) this scratch directory")
    args = parser.parse_args()
    parts = args.parts.split(",")
    scratch = args.keep_dir or Path(tempfile.mkdtemp(prefix="imgbuild-nightly-"))
    cache = scratch / "cache"
    shared = Path(os.environ.get("IMGBUILD_CACHE") or Path.home() / ".cache" / "imgbuild")
    if not cache.exists():
        cache.mkdir(parents=True)
        for area in ("apt-archives", "debs", "debian-index", "kernels"):
            if (shared / area).is_dir():
                subprocess.run(["cp", "-al", str(shared / area), str(cache / area)], check=True)
    env = {**os.environ, "IMGBUILD_CACHE": str(cache), "PYTHONPATH": str(REPO)}
    results: dict[str, Any] = {"machine": f"{platform.node()} {platform.machine()}, {os.cpu_count()} cores",
                               "date": time.strftime("%Y-%m-%d %H:%M", time.gmtime()), "scratch": str(scratch)}
    out = scratch / "out"
    try:
        if "make" in parts:
            bench_make(out, env, results)
        if "status" in parts:
            bench_status(out / "j2", env, results)
        if "release" in parts:
            bench_release(out / "j2", env, results)
    finally:
        for jobs in ("j1", "j2"):
            if (out / jobs).is_dir():
                for vmdir in sorted((out / jobs).glob("*/vm")):
                    imgbuild(out / jobs, env, "destroy", vmdir.parent.name)
        dest = REPO / "bench" / "results"
        dest.mkdir(exist_ok=True)
        (dest / "nightly.json").write_text(json.dumps(results, indent=2) + "\n")
        print(f"results: {dest / 'nightly.json'}; scratch: {scratch}")


if __name__ == "__main__":
    main()
