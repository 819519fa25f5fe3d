"""ISO building speed and memory: imgbuild (pycdlib) against xorriso, genisoimage and cp, in one run.

    .venv/bin/python bench/iso_bench.py [--repeat N] [--pad-mib 600] [--workdir DIR]

Three jobs, each done by every contender on the same inputs, timed as whole processes (start-up
included) with the peak RSS read from wait4's rusage; the median of N runs is reported:

* seed       the NoCloud seed ISO of the rendered web-server recipe (CIDATA, Joliet, Rock Ridge)
* installer  the installer ISO from the trixie netboot files: isolinux + EFI El Torito, 53 MB
* remaster   an ISO laid out like Debian's netinst, padded past 600 MB, made unattended

imgbuild does the whole job from the raw inputs. xorriso and genisoimage get a staged directory tree
with exactly imgbuild's file contents (staging not timed: it favours them); for the remaster, xorriso
edits the image (``-indev``/``-outdev``, boot records replayed) and genisoimage has to extract it first
(``xorriso -osirrox``, timed as part of its job). ``cp`` copies a file of the same size: the floor.
Prints a Markdown table (recorded in bench/iso.md) and writes JSON to bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from builder.debian import Archive
from builder.iso.installer import layout_installer_iso
from builder.iso.isowriter import Concat
from builder.iso.netboot import fetch_netboot

KERNEL_ARGS = ["log_host=10.0.2.2", "log_port=5140", "DEBCONF_DEBUG=5"]


# --- the imgbuild side, run as a child process ---------------------------------------------------


def worker(argv: list[str]) -> None:
    job = argv[0]
    if job == "seed":
        from builder.iso.installer import read_seed_files
        from builder.iso.seed import build_seed_iso, content_epoch

        files = read_seed_files(Path(argv[1]))
        build_seed_iso(files, Path(argv[2]), epoch=content_epoch(files))
    elif job == "installer":
        from builder.iso.installer import build_installer_iso

        build_installer_iso(Path(argv[1]).read_bytes(), Path(argv[2]), release="trixie", kernel_args=KERNEL_ARGS)
    elif job == "remaster":
        from builder.iso.remaster import remaster_iso

        remaster_iso(Path(argv[1]), Path(argv[2]).read_bytes(), Path(argv[3]), kernel_args=KERNEL_ARGS)
    else:
        raise SystemExit(f"unknown job {job}")


# --- measuring ------------------------------------------------------------------------------------


@dataclass
class Sample:
    seconds: float
    peak_bytes: int


LAUNCHER = REPO / "tests/iso/peak_rss.py"  # measures a child's peak RSS without our own pages in it


def measure(cmds: list[list[str]], cwd: Path | None = None) -> Sample:
    """Run *cmds* one after the other; total wall time and the largest peak RSS among them.

    The time includes the small launcher's start (~20 ms, the same for every contender)."""
    total, peak = 0.0, 0
    for cmd in cmds:
        with tempfile.TemporaryFile() as err, tempfile.NamedTemporaryFile() as peak_file:
            start = time.perf_counter()
            proc = subprocess.run([sys.executable, "-S", str(LAUNCHER), peak_file.name, *cmd],
                                  stdout=subprocess.DEVNULL, stderr=err, cwd=cwd)
            total += time.perf_counter() - start
            if proc.returncode != 0:
                err.seek(0)
                raise SystemExit(f"failed ({proc.returncode}): {' '.join(cmd)}\n{err.read().decode()[-2000:]}")
            peak = max(peak, int(Path(peak_file.name).read_text()))
    return Sample(total, peak)


def median_of(n: int, run) -> Sample:
    samples = [run() for _ in range(n)]
    return Sample(statistics.median(s.seconds for s in samples), max(s.peak_bytes for s in samples))


# --- inputs ---------------------------------------------------------------------------------------


def render(work: Path) -> Path:
    out = work / "render"
    imgbuild = Path(sys.executable).with_name("imgbuild")
    cmd = [str(imgbuild)] if imgbuild.exists() else [sys.executable, "-m", "builder"]
    subprocess.run([*cmd, "--recipes-dir", str(REPO / "recipes"), "--out-dir", str(out), "render", "web-server"],
                   check=True, capture_output=True, cwd=REPO)
    return out / "web-server"


def materialise(builder, tree: Path) -> None:
    """Write an IsoBuilder's files as a directory tree (hard links for plain files)."""
    for path, f in builder.files.items():
        dest = tree / path
        dest.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(f.source, bytes):
            dest.write_bytes(f.source)
        elif isinstance(f.source, Concat):
            with open(dest, "wb") as out, f.source.open() as src:
                shutil.copyfileobj(src, out, 1 << 20)
        else:
            try:
                os.link(f.source, dest)
            except OSError:
                shutil.copyfile(f.source, dest)


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines() if line.startswith("MemTotal"))

    def version(cmd: list[str]) -> str:
        try:
            out = subprocess.run(cmd, capture_output=True, text=True).stdout + ""
            return out.strip().splitlines()[0] if out.strip() else "?"
        except FileNotFoundError:
            return "not installed"

    from importlib.metadata import version as pkg_version

    return {
        "cpu": f"{cpu} x {os.cpu_count()}",
        "memory": f"{int(mem) // 1024} MiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "pycdlib": pkg_version("pycdlib"),
        "xorriso": version(["xorriso", "-version"]),
        "genisoimage": version(["genisoimage", "--version"]),
        "load": " ".join(f"{x:.1f}" for x in os.getloadavg()),
    }


# --- jobs -----------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    for tool in ("xorriso", "genisoimage", "cp"):
        if not shutil.which(tool):
            raise SystemExit(f"{tool} is needed: apt-get install xorriso genisoimage")
    work = Path(tempfile.mkdtemp(prefix="iso-bench-", dir=args.workdir))
    me = [sys.executable, str(Path(__file__).resolve()), "--worker"]
    results: dict[str, dict[str, Sample]] = {}
    sizes: dict[str, int] = {}
    n = args.repeat
    try:
        print("preparing inputs (render, netboot, a Debian-like base ISO) ...", file=sys.stderr)
        rendered = render(work)
        preseed = rendered / "preseed.cfg"
        archive = Archive()
        netboot = fetch_netboot("trixie", archive)

        # seed
        seed_tree = work / "seed-tree"
        seed_tree.mkdir()
        for name in ("user-data", "meta-data", "network-config"):
            shutil.copy(rendered / name, seed_tree / name)
        ours = work / "seed.iso"
        results["seed"] = {
            "imgbuild": median_of(n, lambda: measure([[*me, "seed", str(rendered), str(ours)]])),
            "xorriso": median_of(n, lambda: measure([["xorriso", "-as", "mkisofs", "-quiet", "-V", "CIDATA", "-J", "-r",
                                                      "-o", str(work / "seed-x.iso"), str(seed_tree)]])),
            "genisoimage": median_of(n, lambda: measure([["genisoimage", "-quiet", "-V", "CIDATA", "-J", "-r",
                                                          "-o", str(work / "seed-g.iso"), str(seed_tree)]])),
            "cp": median_of(n, lambda: measure([["cp", str(ours), str(work / "seed-cp.iso")]])),
        }
        sizes["seed"] = ours.stat().st_size
        print("seed done", file=sys.stderr)

        # installer
        ours = work / "installer.iso"
        tree = work / "installer-tree"
        materialise(layout_installer_iso(netboot, preseed.read_bytes(), kernel_args=KERNEL_ARGS, epoch=1_700_000_000), tree)
        boot = ["-b", "isolinux/isolinux.bin", "-c", "isolinux/boot.cat", "-no-emul-boot", "-boot-load-size", "4",
                "-boot-info-table", "-eltorito-alt-boot", "-e", "boot/grub/efi.img", "-no-emul-boot"]
        results["installer"] = {
            "imgbuild": median_of(n, lambda: measure([[*me, "installer", str(preseed), str(ours)]])),
            "xorriso": median_of(n, lambda: measure([["xorriso", "-as", "mkisofs", "-quiet", "-r", "-J", "-joliet-long",
                                                      "-V", "IMGBUILD_TRIXIE", *boot, "-o", str(work / "inst-x.iso"), str(tree)]])),  # noqa: E501
            "genisoimage": median_of(n, lambda: measure([["genisoimage", "-quiet", "-r", "-J", "-joliet-long",
                                                          "-V", "IMGBUILD_TRIXIE", *boot, "-o", str(work / "inst-g.iso"), str(tree)]])),  # noqa: E501
            "cp": median_of(n, lambda: measure([["cp", str(ours), str(work / "inst-cp.iso")]])),
        }
        sizes["installer"] = ours.stat().st_size
        print("installer done", file=sys.stderr)

        # remaster
        from tests.iso.debian_like import VOLUME, build_debian_like_iso

        base_dir = work / "base"
        base_dir.mkdir()
        base = build_debian_like_iso(base_dir / "netinst.iso", netboot, archive, pad_bytes=args.pad_mib << 20, work=base_dir)
        ours = work / "remastered.iso"
        changed = work / "changed"
        changed.mkdir()
        measure([[*me, "remaster", str(base), str(preseed), str(ours)]])  # to read the new files from
        maps: list[str] = []
        for rel in ("install.amd/preseed.gz", "isolinux/isolinux.cfg", "isolinux/orig.cfg", "boot/grub/grub.cfg",
                    "boot/grub/orig.cfg", "md5sum.txt"):
            local = changed / rel.replace("/", "_")
            local.write_bytes(subprocess.run(["isoinfo", "-R", "-i", str(ours), "-x", "/" + rel],
                                             check=True, capture_output=True).stdout)
            maps += ["-map", str(local), "/" + rel]
        extracted = work / "extracted"

        def genisoimage_remaster() -> Sample:
            if extracted.exists():
                subprocess.run(["chmod", "-R", "u+w", str(extracted)], check=True)
                shutil.rmtree(extracted)
            extract = measure([["xorriso", "-osirrox", "on", "-indev", str(base), "-extract", "/", str(extracted)]])
            subprocess.run(["chmod", "-R", "u+w", str(extracted)], check=True)
            for i in range(0, len(maps), 3):
                shutil.copyfile(maps[i + 1], extracted / maps[i + 2].lstrip("/"))
            master = measure([["genisoimage", "-quiet", "-r", "-J", "-joliet-long", "-V", VOLUME, *boot,
                               "-o", str(work / "rm-g.iso"), str(extracted)]])
            return Sample(extract.seconds + master.seconds, max(extract.peak_bytes, master.peak_bytes))

        def xorriso_remaster() -> Sample:
            (work / "rm-x.iso").unlink(missing_ok=True)  # xorriso will not overwrite a non-empty -outdev
            return measure([["xorriso", "-no_rc", "-indev", str(base), "-outdev", str(work / "rm-x.iso"),
                             "-boot_image", "any", "replay", *maps, "-end"]])

        results["remaster"] = {
            "imgbuild": median_of(n, lambda: measure([[*me, "remaster", str(base), str(preseed), str(ours)]])),
            "xorriso": median_of(n, xorriso_remaster),
            "genisoimage": median_of(n, genisoimage_remaster),
            "cp": median_of(n, lambda: measure([["cp", str(base), str(work / "rm-cp.iso")]])),
        }
        sizes["remaster"] = ours.stat().st_size
        print("remaster done", file=sys.stderr)
    finally:
        if (work / "extracted").exists():
            subprocess.run(["chmod", "-R", "u+w", str(work / "extracted")], check=False)
        shutil.rmtree(work, ignore_errors=True)

    info = machine()
    lines = [
        f"Machine: {info['cpu']}, {info['memory']}, Linux {info['kernel']}, Python {info['python']}, "
        f"pycdlib {info['pycdlib']}; load average at the end {info['load']}",
        f"Tools: {info['xorriso']}; {info['genisoimage']}",
        f"Median of {n} runs, page cache warm, whole processes (start-up included).",
        "",
        "| job | size | tool | time | vs imgbuild | peak RSS |",
        "|---|---|---|---|---|---|",
    ]
    for job, by_tool in results.items():
        base_time = by_tool["imgbuild"].seconds
        for tool, sample in by_tool.items():
            ratio = "1.00" if tool == "imgbuild" else f"{sample.seconds / base_time:.2f}"
            lines.append(
                f"| {job} | {sizes[job] / 1e6:.1f} MB | {tool} | {sample.seconds:.2f} s | {ratio} | "
                f"{sample.peak_bytes / 2**20:.1f} MiB |"
            )
    lines.append("")
    lines.append("Ratio column: the tool's time divided by imgbuild's (above 1 means imgbuild is faster).")
    print("\n".join(lines))
    out = REPO / "bench/results"
    out.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%dT%H%M%S")
    (out / f"iso-{stamp}.json").write_text(json.dumps({
        "machine": info, "repeat": n, "sizes": sizes,
        "results": {j: {t: vars(s) for t, s in r.items()} for j, r in results.items()},
    }, indent=1))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--pad-mib", type=int, default=600, help="padding of the remaster base ISO (MiB)")
    parser.add_argument("--workdir", type=Path, default=None, help="where temporary ISOs go (default: $TMPDIR)")
    run(parser.parse_args())


if __name__ == "__main__":
    main()
