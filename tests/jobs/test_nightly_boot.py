"""Boot tests of this round's jobs on the local QEMU target: a multi-recipe -j 2 make, a release whose linked
clone verifies, and a release whose clone fails its check, leaving the previous latest in place.

One module (one xdist worker), in file order, sharing guests: the golden-base VM that the -j 2 make verifies
is the source of the failing release (`imgbuild template`, a copy: no second build). Guest boots: two in
parallel (make), two for the release (candidate, clone), one cut short (the failing clone). Everything the
module creates is removed at the end, also on failure.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.pipeline.conftest import Imgbuild, qemu_processes

pytestmark = pytest.mark.boot


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Imgbuild]:
    runner = Imgbuild(tmp_path_factory.mktemp("nightly"))
    try:
        yield runner
    finally:
        # clones before templates: a template with linked clones cannot go
        dirs = sorted((p.parent.name for p in runner.out.glob("*/vm")), key=lambda n: (not n.endswith("-check"), n))
        for name in dirs:
            subprocess.run([sys.executable, "-m", "builder", "--out-dir", str(runner.out), "destroy", name],
                           capture_output=True, timeout=300, check=False)
        assert qemu_processes(runner.out) == []


def events(stdout: str) -> list[dict]:
    return [json.loads(line) for line in stdout.splitlines() if line.strip()]


def status(lab: Imgbuild) -> dict:
    proc = lab("status", "--json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_make_two_recipes_in_parallel(lab: Imgbuild) -> None:
    proc = lab("make", "web-server", "golden-base", "-j", "2", "--json")
    assert proc.returncode == 0, proc.stderr[-3000:]
    stream = events(proc.stdout)
    summary = stream[-1]
    assert summary["event"] == "summary" and summary["ok"] and summary["parallel"] == 2
    assert {j["name"]: j["checks_passed"] for j in summary["jobs"]} == {"web-server": 3, "golden-base": 1}
    # -j 2: the jobs ran side by side (each started before the other ended; one's image build, say, while the
    # other's guest boots)
    starts = [i for i, e in enumerate(stream) if e["event"] == "job-start"]
    results = [i for i, e in enumerate(stream) if e["event"] == "result"]
    assert len(starts) == 2 and max(starts) < min(results)
    for name in ("web-server", "golden-base"):
        log = (lab.out / name / "make.log").read_text()
        assert "==> boot" in log and "check ssh: ok" in log
        assert json.loads((lab.out / name / "report.json").read_text())["vm"]["state"] == "shut down"
        assert len(list((lab.out / name / "history").glob("*-make.json"))) == 1
    assert qemu_processes(lab.out) == []


def test_release_is_proven_by_a_linked_clone(lab: Imgbuild) -> None:
    proc = lab("release", "golden-base", "--keep", "2")
    assert proc.returncode == 0, proc.stderr[-3000:]
    report = json.loads((lab.out / "golden-base" / "release.json").read_text())
    name = report["release"]["name"]
    assert name.startswith("golden-base-") and f"released {name}" in proc.stdout
    assert [s["name"] for s in report["stages"]] == ["leftovers", "candidate", "template", "check", "promote",
                                                     "prune"]
    assert report["checks"] and all(c["ok"] for c in report["checks"])  # the clone's checks
    clone = json.loads((lab.out / f"{name}-check" / "report.json").read_text())
    assert clone["method"] == "linked clone" and clone["vm"]["source"] == name and clone["ok"]
    assert not (lab.out / f"{name}-check" / "vm").exists()  # the proof is removed once it passed
    releases = [v for v in status(lab)["vms"] if v["kind"] == "release"]
    assert [(r["name"], r["latest"], r["state"]) for r in releases] == [(name, True, "template")]
    # for bench/nightly.md (shown with -rA): what the release added to the make of its candidate
    stages = {s["name"]: s["seconds"] for s in report["stages"]}
    print(f"release {name}: {json.dumps(stages)}; total {sum(stages.values()):.1f}s; added to the candidate's "
          f"make: {sum(stages.values()) - stages['candidate']:.1f}s; the clone's stages: "
          f"{json.dumps({s['name']: s['seconds'] for s in clone['stages']})}")


def test_a_release_whose_clone_fails_leaves_latest_in_place(lab: Imgbuild) -> None:
    """`imgbuild template golden-base` copies the VM the -j 2 make verified into a candidate; its linked clone's
    guest dies during the check (its QEMU is killed): the candidate and the clone go, latest stays."""
    before = [v for v in status(lab)["vms"] if v["kind"] == "release"]
    stop = threading.Event()
    killed: list[str] = []

    def kill_the_clone() -> None:
        seen = 0.0
        while not stop.is_set() and not killed:
            clone = [c for c in qemu_processes(lab.out) if "-check" in c]
            if clone and not seen:
                seen = time.monotonic()
            if clone and time.monotonic() - seen > 5:  # it is booting (and QEMU has daemonized: a new pid)
                pid = _pid_of(clone[0])
                try:
                    if pid:
                        os.kill(pid, signal.SIGKILL)
                        killed.append(clone[0])
                except ProcessLookupError:
                    pass
            time.sleep(0.5)

    watcher = threading.Thread(target=kill_the_clone, daemon=True)
    watcher.start()
    try:
        proc = lab("template", "golden-base")
    finally:
        stop.set()
        watcher.join(10)
    assert killed, "the clone never started"
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert "stopped while waiting for its address" in proc.stderr
    report = json.loads((lab.out / "golden-base" / "release.json").read_text())
    failed = report["release"]["name"]
    assert report["ok"] is False and report["release"]["rolled_back"] is True
    assert [s["name"] for s in report["stages"] if not s["ok"]] == ["check"]
    after = [v for v in status(lab)["vms"] if v["kind"] == "release"]
    assert [(r["name"], r["latest"]) for r in after] == [(r["name"], r["latest"]) for r in before]
    names = {p.parent.name for p in lab.out.glob("*/vm")}
    assert failed not in names and f"{failed}-check" not in names and "golden-base" in names


def _pid_of(cmdline: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if proc.joinpath("cmdline").read_bytes().replace(b"\0", b" ").decode() == cmdline:
                    return int(proc.name)
            except OSError:
                continue
    return None
