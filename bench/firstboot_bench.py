"""QEMU start to all checks passed, side by side: QEMU 7.2 single-threaded TCG, QEMU 10 multi-threaded TCG,
and QEMU 10 with the trimmed golden image, for web-server and lxde-desktop, runs alternating.

    flock /tmp/heavy.lock .venv/bin/python bench/firstboot_bench.py --baseline DIR --qemu72 BIN [--runs 3]

--baseline is a checkout of imgbuild before the trimmed first boot (`git archive COMMIT | tar -x -C DIR`): its
code and its golden images (IMAGE_BUILDER_VERSION 2) are the first two variants. --qemu72 is a directory into
which Debian 12's QEMU 7.2 was unpacked (`apt-get download qemu-system-x86=1:7.2+dfsg-7+deb12u18+b3
qemu-system-common=1:7.2+dfsg-7+deb12u18+b3 qemu-system-data=1:7.2+dfsg-7+deb12u18`, then `dpkg-deb -x` each
into DIR); the bench runs it with its own modules and a firmware directory that adds SeaBIOS and iPXE, and
imgbuild picks single-threaded TCG for it by itself. Each run is `imgbuild make RECIPE --rebuild` (a new VM, so a first
boot) and the time is the report's boot stage plus its verify stage: from QEMU's start to the last check.
The first run of each variant keeps the VM for a moment to record `systemd-analyze` and its critical chain.
Prints Markdown (the table in bench/local.md) and writes bench/results/firstboot.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def make(checkout: Path, out: Path, recipe: str, path_prefix: str | None, keep: bool) -> dict:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    if path_prefix:
        env["PATH"] = f"{path_prefix}:{env['PATH']}"
    argv = [sys.executable, "-m", "builder", "--recipes-dir", str(checkout / "recipes"), "--out-dir", str(out),
            "make", recipe, "--rebuild", *(["--keep"] if keep else [])]
    proc = subprocess.run(argv, cwd=checkout, env=env, capture_output=True, text=True, timeout=3600)
    report = json.loads((out / recipe / "report.json").read_text())
    if proc.returncode != 0:
        print(f"  make {recipe} failed ({proc.returncode}): {report.get('error')}", file=sys.stderr)
    return report


def guest_analysis(report: dict, checkout: Path) -> str:
    """systemd-analyze and the critical chain, read in the kept guest over the pinned-key SSH command."""
    cmd = [*shlex.split(report["access"]["ssh"]), "-o", "BatchMode=yes",
           "systemd-analyze; systemd-analyze critical-chain multi-user.target graphical.target --no-pager"]
    proc = subprocess.run(cmd, cwd=checkout, capture_output=True, text=True, timeout=300)
    return proc.stdout + proc.stderr


def destroy(checkout: Path, out: Path, recipe: str) -> None:
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(out), "destroy", recipe], cwd=checkout,
                   env=env, capture_output=True, timeout=600)


def wrapper_qemu72(root: Path, bin_dir: Path) -> None:
    """qemu-system-x86_64 in *bin_dir* (first on PATH for that variant): QEMU 7.2 from *root*, with its own
    modules and firmware (plus SeaBIOS and iPXE, which its data package only links to)."""
    firmware = bin_dir / "firmware"
    firmware.mkdir()
    for source in (root / "usr/share/qemu", Path("/usr/share/seabios"), Path("/usr/lib/ipxe/qemu"), Path("/usr/share/qemu")):
        for entry in sorted(source.iterdir()) if source.is_dir() else ():
            link = firmware / entry.name
            if entry.exists() and not link.exists() and not link.is_symlink():
                link.symlink_to(entry.resolve())
    wrapper = bin_dir / "qemu-system-x86_64"
    modules = root / "usr/lib/x86_64-linux-gnu/qemu"
    wrapper.write_text(f"#!/bin/sh\nQEMU_MODULE_DIR={shlex.quote(str(modules))} exec "
                       f"{shlex.quote(str(root / 'usr/bin/qemu-system-x86_64'))} -L {shlex.quote(str(firmware))} \"$@\"\n")
    wrapper.chmod(0o755)


def seconds(report: dict) -> float | None:
    if not report.get("ok"):
        return None
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    return stages["boot"] + stages["verify"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--baseline", type=Path, required=True, help="checkout before the trimmed first boot")
    parser.add_argument("--qemu72", type=Path, required=True, help="directory with Debian 12's QEMU 7.2 unpacked")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--recipes", default="web-server,lxde-desktop")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgbuild-qemu72-") as wrapper_dir:
        wrapper_qemu72(args.qemu72.resolve(), Path(wrapper_dir))
        variants = [
            ("QEMU 7.2, single-threaded TCG", args.baseline.resolve(), wrapper_dir),
            ("QEMU 10, multi-threaded TCG", args.baseline.resolve(), None),
            ("QEMU 10, multi-threaded, trimmed image", REPO, None),
        ]
        results: dict[str, dict[str, list[float | None]]] = {}
        analysis: dict[str, str] = {}
        load: list[float] = []
        with tempfile.TemporaryDirectory(prefix="imgbuild-bench-") as tmp:
            for run in range(args.runs):
                for recipe in args.recipes.split(","):
                    for label, checkout, prefix in variants:
                        out = Path(tmp) / f"{variants.index((label, checkout, prefix))}"
                        first = run == 0
                        load.append(os.getloadavg()[0])
                        report = make(checkout, out, recipe, prefix, keep=first)
                        took = seconds(report)
                        results.setdefault(recipe, {}).setdefault(label, []).append(took)
                        print(f"run {run + 1} {recipe} {label}: {took if took is None else round(took, 1)} s "
                              f"(load {load[-1]:.1f})", file=sys.stderr, flush=True)
                        if first and report.get("ok"):
                            time.sleep(1)
                            analysis[f"{recipe} / {label}"] = guest_analysis(report, checkout)
                        destroy(checkout, out, recipe)
    print("| recipe | variant | runs (s, QEMU start to all checks passed) | median |")
    print("| --- | --- | --- | ---: |")
    for recipe, by_variant in results.items():
        for label, runs in by_variant.items():
            done = [r for r in runs if r is not None]
            shown = ", ".join("failed" if r is None else f"{r:.0f}" for r in runs)
            median = f"{statistics.median(done):.0f}" if done else "-"
            print(f"| {recipe} | {label} | {shown} | {median} |")
    print(f"\nload average (1 min) at each run's start: {min(load):.1f} to {max(load):.1f}")
    for name, text in analysis.items():
        print(f"\n### {name}\n\n```text\n{text.strip()}\n```")
    (REPO / "bench" / "results").mkdir(exist_ok=True)
    (REPO / "bench" / "results" / "firstboot.json").write_text(
        json.dumps({"results": results, "analysis": analysis, "load": load}, indent=1) + "\n")


if __name__ == "__main__":
    main()
