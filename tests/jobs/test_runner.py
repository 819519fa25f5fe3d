"""One runner for make, clone and release: many recipes per run, -j, the event stream, logs, history, interrupts.

On the PVE simulator with the guest side stubbed (see conftest.py); nothing boots here.
"""

from __future__ import annotations

import ast
import json
import signal
import threading
import time
from pathlib import Path

import pytest

from builder.cli.main import main
from builder.errors import InvalidInput
from builder.pipeline.jobs import Capacity, check_parallel, resolve_recipes
from tests.jobs.conftest import Guests, stubbed_process
from tests.pve.conftest import REPO, no_orphans
from tests.pvesim.simulator import PveSimulator


def image_volume(volid: str) -> bool:
    return volid.startswith("local:import/")


def events_of(stdout: str) -> list[dict]:
    lines = [line for line in stdout.splitlines() if line.strip()]
    return [json.loads(line) for line in lines]  # every line is one JSON object, or this fails


def test_two_recipes_in_parallel_one_failing_json_events(cli, guests: Guests, sim_env: PveSimulator,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    guests.failing.add("ssh-server")
    assert cli("make", "web-server", "ssh-server", "-j", "2", "--json", "--target", "sim") == 1
    events = events_of(capsys.readouterr().out)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "summary" and all(e["v"] == 1 and "time" in e for e in events[:-1])
    summary = events[-1]
    assert summary["ok"] is False and summary["parallel"] == 2
    by_job = {j["name"]: j for j in summary["jobs"]}
    assert by_job["web-server"]["ok"] is True and by_job["web-server"]["checks_passed"] == 2
    failed = by_job["ssh-server"]
    assert failed["ok"] is False and "1 check(s) failed: service ssh" in failed["error"]
    assert failed["failed_checks"] == ["service ssh"] and failed["vm"]["state"] == "destroyed after failure"

    for job in ("web-server", "ssh-server"):
        mine = [e for e in events if e.get("job") == job]
        assert mine[0]["event"] == "job-start" and mine[-1]["event"] == "result"
        ends = {e["stage"]: e for e in mine if e["event"] == "stage-end"}
        assert {"render", "build", "image", "stage", "create", "boot", "verify"} <= set(ends)
        assert all(isinstance(e["seconds"], float | int) for e in ends.values())
        assert ends["image"]["reused"] is True  # the stub's cached image
        assert [e["check"] for e in mine if e["event"] == "check"] == ["ssh", "service ssh"]
        assert any(e["event"] == "note" for e in mine)
        log = (cli.out / job / "make.log").read_text()
        assert "==> render" in log and "==> verify" in log and "check service ssh" in log
        assert len(list((cli.out / job / "history").glob("*-make.json"))) == 1
    # -j 2: the second job started before the first ended
    starts = [i for i, e in enumerate(events) if e["event"] == "job-start"]
    results = [i for i, e in enumerate(events) if e["event"] == "result"]
    assert len(starts) == 2 and max(starts) < min(results)
    assert sorted(guests.checked) == ["ssh-server", "web-server"]
    assert [v["config"]["name"] for v in sim_env.vms()] == ["web-server"]  # the failed one left nothing


def test_text_summary_table_and_history_limit(cli, guests: Guests, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("make", "web-server", "golden-base", "--target", "sim", "--history", "1") == 0
    assert cli("make", "web-server", "golden-base", "--target", "sim", "--history", "1") == 0
    out, err = capsys.readouterr()
    table = out.splitlines()
    header = max(i for i, line in enumerate(table) if line.startswith("RECIPE"))  # the second run's
    assert table[header].split() == ["RECIPE", "JOB", "STAGES", "RUN", "REUSED", "CHECKS", "DURATION", "RESULT"]
    rows = [line.split() for line in table[header + 1: header + 3]]
    assert [r[0] for r in rows] == ["web-server", "golden-base"] and all(r[-1] == "ok" for r in rows)
    # the second run found both VMs up to date: the reuse stage is reported as reused
    assert all("reuse" in r[3] for r in rows) and all(r[4] == "2/2" for r in rows)
    assert "2 of 2 job(s) succeeded" in out
    assert "[web-server] ==> render" in err and "[golden-base] ==> verify" in err
    assert len(list((cli.out / "web-server" / "history").glob("*.json"))) == 1


def test_refresh_image_builds_an_image_shared_by_recipes_once_per_run(cli, guests: Guests) -> None:
    """base and ssh-server use the same golden image: a nightly --refresh-image run builds it once."""
    assert cli("make", "base", "ssh-server", "web-server", "--refresh-image", "-j", "2", "--target", "sim") == 0
    refreshed = [key for key, refresh in guests.images if refresh]
    assert len(guests.images) == 3 and len(refreshed) == 2 and len(set(refreshed)) == 2
    assert len({key for key, _ in guests.images}) == 2  # two distinct images for three recipes
    notes = (cli.out / "base" / "make.log").read_text() + (cli.out / "ssh-server" / "make.log").read_text()
    assert notes.count("golden image already refreshed by another recipe in this run") == 1


def test_unknown_recipes_are_all_named_before_anything_starts(cli, sim_env: PveSimulator,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    assert cli("make", "web-server", "nope", "also-nope", "--target", "sim") == 2
    err = capsys.readouterr().err
    assert "unknown recipes: nope, also-nope; nothing was started" in err and "golden-base" in err
    assert not cli.out.exists() and sim_env.requests_matching("POST") == []
    assert cli("make", "--target", "sim") == 2
    assert "name at least one recipe (or --all" in capsys.readouterr().err


def test_local_target_refuses_more_guests_than_cores_or_memory(tmp_path: Path,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    recipes = resolve_recipes([], REPO / "recipes", all_recipes=True)
    assert {r.name for r in recipes} >= {"web-server", "golden-base", "lxde-desktop"}
    with pytest.raises(InvalidInput, match=r"at most one guest per core, and this machine has 2"):
        check_parallel(recipes, 3, "local", Capacity(cores=2, memory_mib=64 * 1024))
    with pytest.raises(InvalidInput, match=r"-j 2: the 2 largest guests need \d+ MiB together .* but 3000 MiB"):
        check_parallel(recipes, 2, "local", Capacity(cores=4, memory_mib=3000))
    assert check_parallel(recipes, 2, "local", Capacity(cores=2, memory_mib=16 * 1024)) == 2
    assert check_parallel(recipes, 8, "sim", Capacity(cores=1, memory_mib=1)) == 5  # not the local machine's
    assert check_parallel(recipes[:1], 4, "local", Capacity(cores=1, memory_mib=1)) == 1
    # the CLI, on this machine, says why before anything starts
    cmd = ["--recipes-dir", str(REPO / "recipes"), "--out-dir", str(tmp_path / "out"), "make", "--all", "-j", "99",
           "--target", "local"]
    assert main(cmd) == 2
    assert "at most one guest per core" in capsys.readouterr().err and not (tmp_path / "out").exists()


def test_an_interrupt_inside_one_job_stops_every_job_cleanly(cli, guests: Guests, sim_env: PveSimulator,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    """A KeyboardInterrupt raised in one job's thread stops the run: the other job, waiting in its checks,
    is interrupted too and cleans up like a single make (its VM destroyed, its seed removed)."""
    web_waiting = threading.Event()

    def slow() -> None:
        web_waiting.set()
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise AssertionError("web-server was not interrupted")

    def interrupt() -> None:
        assert web_waiting.wait(30)
        raise KeyboardInterrupt

    guests.hooks.update({"web-server": slow, "ssh-server": interrupt})
    start = time.monotonic()
    assert cli("make", "web-server", "ssh-server", "-j", "2", "--json", "--target", "sim") == 130
    assert time.monotonic() - start < 50
    out, err = capsys.readouterr()
    assert "interrupted" in err
    results = {e["job"]: e for e in events_of(out) if e["event"] == "result"}
    assert set(results) == {"web-server", "ssh-server"}
    assert all(r["interrupted"] and not r["ok"] for r in results.values())
    for name in results:
        report = json.loads((cli.out / name / "report.json").read_text())
        assert report["ok"] is False and report["vm"]["state"] == "destroyed after failure"
    no_orphans(sim_env, keep=image_volume)


def test_sigint_in_the_main_thread_stops_queued_and_running_jobs(cli, guests: Guests, sim_env: PveSimulator,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    """Ctrl-C (SIGINT, as SIGTERM through builder.errors.Terminated) arrives in the main thread while a job
    runs: the running job cleans up, the queued one never starts, the exit status is 130."""
    def ctrl_c() -> None:
        signal.raise_signal(signal.SIGINT)  # delivered to the main thread, which waits on the workers
        time.sleep(60)

    def checks_running() -> None:  # like the pipeline's own waits: short sleeps, until interrupted
        threading.Thread(target=ctrl_c, daemon=True).start()
        for _ in range(300):
            time.sleep(0.1)

    guests.hooks["web-server"] = checks_running
    assert cli("make", "web-server", "ssh-server", "-j", "1", "--target", "sim") == 130
    assert "interrupted" in capsys.readouterr().err
    assert guests.checked == ["web-server"]  # ssh-server never started
    assert not (cli.out / "ssh-server" / "report.json").exists()
    no_orphans(sim_env, keep=image_volume)


def test_keep_zero_and_negative_are_refused(cli, capsys: pytest.CaptureFixture[str]) -> None:
    for keep in ("0", "-1"):
        assert cli("release", "golden-base", "--keep", keep, "--target", "sim") == 2
        assert "at least the new release is kept" in capsys.readouterr().err


def test_cli_modules_import_only_the_pipelines_public_modules() -> None:
    """The CLI stays a thin parser: it reaches the pipeline through builder.pipeline.jobs and .events only."""
    allowed = {"builder.pipeline.jobs", "builder.pipeline.events"}
    offenders = []
    for path in sorted((REPO / "builder" / "cli").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            for name in names:
                if name.startswith("builder.pipeline") and name not in allowed and not any(
                        name.startswith(a + ".") for a in allowed):
                    offenders.append(f"{path.relative_to(REPO)}: {name}")
    assert offenders == []


class Stop(KeyboardInterrupt):
    """Like builder.errors.Terminated (SIGTERM): a KeyboardInterrupt of its own class."""


def test_the_interrupts_own_class_reaches_every_job_and_the_caller(guests: Guests, sim_env: PveSimulator,
                                                                     tmp_path: Path) -> None:
    """The runner raises the very class it caught (SIGTERM's Terminated stays Terminated: exit 143, not 130)
    inside the other jobs and again in the caller's thread."""
    from builder.pipeline.events import CollectSink
    from builder.pipeline.jobs import MakeOptions, make_jobs, run_jobs
    from builder.targets.pve.connect import open_pve_target

    seen: dict[str, str] = {}
    waiting = threading.Event()

    def stop() -> None:
        assert waiting.wait(30)
        raise Stop

    def wait() -> None:
        waiting.set()
        try:
            for _ in range(600):
                time.sleep(0.05)
        except BaseException as exc:
            seen["web-server"] = type(exc).__name__
            raise

    guests.hooks.update({"ssh-server": stop, "web-server": wait})
    recipes = resolve_recipes(["web-server", "ssh-server"], REPO / "recipes")
    out = tmp_path / "out"
    sink = CollectSink()
    with pytest.raises(Stop):
        run_jobs(make_jobs(recipes, out, MakeOptions()), open_target=lambda: open_pve_target("sim", out),
                 sink=sink, out_root=out, parallel=2)
    assert seen == {"web-server": "Stop"}
    assert {e["job"] for e in sink.events if e["event"] == "result" and e["interrupted"]} == {"web-server",
                                                                                             "ssh-server"}
    no_orphans(sim_env, keep=image_volume)


def test_sigterm_stops_a_parallel_run_and_every_job_cleans_up(cli, guests: Guests, sim_env: PveSimulator,
                                                             small_qcow2: Path, tmp_path: Path) -> None:
    """systemd stopping the nightly unit: SIGTERM to a -j 2 run, both jobs in their checks. Both clean up (their
    VMs and seeds removed), the run exits 143."""
    proc, _ = stubbed_process(cli, small_qcow2, tmp_path, "-server", "make", "web-server", "ssh-server", "-j", "2",
                              "--target", "sim")
    deadline = time.monotonic() + 60
    while len(sim_env.vm_ids()) < 2 or len(sim_env.requests_matching("GET", r"/agent/network-get-interfaces$")) < 2:
        assert time.monotonic() < deadline, sim_env.vms()
        time.sleep(0.2)
    time.sleep(1)
    proc.send_signal(signal.SIGTERM)
    _out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err[-3000:]
    assert "Traceback" not in err
    sim_env.wait_tasks()
    no_orphans(sim_env, keep=image_volume)
    for name in ("web-server", "ssh-server"):
        report = json.loads((cli.out / name / "report.json").read_text())
        assert report["ok"] is False and report["error"].startswith("Terminated")
