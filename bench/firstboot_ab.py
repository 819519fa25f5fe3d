"""A first-boot change measured against the tree before it: QEMU start to all checks passed, alternating.

    flock /tmp/heavy.lock .venv/bin/python bench/firstboot_ab.py --baseline DIR [--recipe web-server] [--runs 3]

--baseline is a checkout of imgbuild before the change (`git worktree add DIR COMMIT`); both trees use this
machine's QEMU and their own golden images (a change to the image bumps IMAGE_BUILDER_VERSION, so each tree
builds and caches its own; the first run of a tree may build one, which its boot and verify stages do not
include). Each run is `imgbuild make RECIPE --rebuild` (a new VM, so a first boot). Prints one Markdown row
per tree.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.firstboot_bench import REPO, make, seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True, help="checkout of imgbuild before the change")
    parser.add_argument("--recipe", default="web-server")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    trees = {"before": args.baseline.resolve(), "after": REPO}
    times: dict[str, list[float | None]] = {name: [] for name in trees}
    with tempfile.TemporaryDirectory(prefix="firstboot-ab-") as scratch:
        for _ in range(args.runs):
            for name, tree in trees.items():
                report = make(tree, Path(scratch) / name, args.recipe, None, keep=False)
                times[name].append(seconds(report))
                print(f"  {name}: {times[name][-1]} s", flush=True)
    print("\n| recipe | tree | runs (s) | mean |\n| --- | --- | --- | ---: |")
    for name, runs in times.items():
        done = [t for t in runs if t is not None]
        shown = ", ".join("failed" if t is None else f"{t:.1f}" for t in runs)
        mean = f"{statistics.fmean(done):.1f}" if done else "-"
        print(f"| {args.recipe} | {name} | {shown} | {mean} |")


if __name__ == "__main__":
    main()
