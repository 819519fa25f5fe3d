"""Upload benchmark for the Proxmox VE target: imgbuild's streamed upload against `curl -F`, same file, same run.

    .venv/bin/python bench/pve_upload.py [--sizes 2,4] [--rounds 2] [--write bench/pve.md]

For each size (GiB) a sparse ISO-named file (random first MiB) is created in a temporary directory
and uploaded to the PVE simulator (``python -m tests.pvesim``, a separate process, TLS with its own
CA) alternately by

- imgbuild: a child process that hashes the file (sha256), POSTs it through the PVE target's
  uploader (MultipartEncoder, 1 MiB blocks, checksum fields) and waits for the import task;
  its peak RSS comes from wait4() (ru_maxrss);
- curl: ``curl -F content=iso -F checksum-algorithm=sha256 -F checksum=... -F filename=@FILE`` to the
  same endpoint, the token header read from a 0600 file (never on the command line).

Throughput compares the HTTP request alone (start of the POST to the answer) for both: that is what
the tools do differently; hashing and PVE's import task are reported beside it. The tools alternate
(and alternate who goes first). Pass criteria: peak RSS of imgbuild's upload process under 150 MB;
imgbuild's median throughput at least 0.8x curl's. Results (and the machine) are printed and, with --write, written as Markdown.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

GIB = 1024**3
MIB = 1024**2
RSS_LIMIT_MB = 150
RATIO_MIN = 0.8


# --- the child: imgbuild's upload, alone in its process -----------------------------------------------


def child(path: Path, name: str) -> None:
    from builder.targets.pve.connect import open_pve_target
    from builder.targets.pve.upload import cached_sha256

    target = open_pve_target("pve", Path("."))
    t0 = time.monotonic()
    digest = cached_sha256(path)
    t1 = time.monotonic()
    upid = target.uploader.post(path, storage="local", content="iso", filename=name, sha256=digest,
                                label=name)
    t2 = time.monotonic()
    target.client.wait_task(upid, timeout=3600, what=f"import of {name}")
    t3 = time.monotonic()
    print(json.dumps({"hash_s": t1 - t0, "transfer_s": t2 - t1, "task_s": t3 - t2, "sha256": digest}))


# --- the parent ------------------------------------------------------------------------------------


def sha256_of(path: Path) -> str:
    from builder.cachedir import sha256_file

    return sha256_file(path)


def make_file(path: Path, size: int) -> None:
    with open(path, "wb") as fh:
        fh.write(os.urandom(MIB))
        fh.truncate(size)


def start_simulator(data_dir: Path, token: str) -> tuple[subprocess.Popen[str], dict]:
    env = {**os.environ, "PVESIM_TOKEN": token, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "tests.pvesim", "--port", "0", "--data-dir", str(data_dir)],
                            cwd=REPO, env=env, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line:
        proc.kill()
        raise SystemExit("the simulator did not start")
    return proc, json.loads(line)


def run_imgbuild(path: Path, name: str, env: dict[str, str]) -> dict:
    proc = subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "--child", str(path), name],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"imgbuild upload failed:\n{err}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss_mb"] = usage.ru_maxrss / 1024  # KiB on Linux
    result["cpu_s"] = usage.ru_utime + usage.ru_stime
    return result


def run_curl(path: Path, name: str, sha256: str, info: dict, header_file: Path, client) -> dict:  # type: ignore[no-untyped-def]
    url = f"{info['api_url']}/nodes/{info['node']}/storage/local/upload"
    out = header_file.with_name("curl.out")
    cmd = ["curl", "-sS", "--fail-with-body", "--cacert", info["ca_file"], "-H", f"@{header_file}",
           "-F", "content=iso", "-F", "checksum-algorithm=sha256", "-F", f"checksum={sha256}",
           "-F", f"filename=@{path};filename={name};type=application/octet-stream",
           "-o", str(out), "-w", "%{time_total} %{size_upload} %{http_code}", url]
    before = _children_cpu()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    stdout, stderr = proc.communicate()
    cpu_s = _children_cpu() - before
    if proc.returncode != 0:
        raise SystemExit(f"curl failed ({proc.returncode}): {stderr} {out.read_text() if out.exists() else ''}")
    total, uploaded, code = stdout.split()
    upid = json.loads(out.read_text())["data"]
    t0 = time.monotonic()
    client.wait_task(upid, timeout=3600, what=f"import of {name}")
    return {"transfer_s": float(total), "bytes": int(uploaded), "http": int(code), "task_s": time.monotonic() - t0,
            "cpu_s": cpu_s}


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def machine() -> dict[str, str]:
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
    import ssl

    curl = subprocess.run(["curl", "--version"], capture_output=True, text=True).stdout.splitlines()[0]
    return {"cpu": f"{cpu}, {os.cpu_count()} cores", "memory": f"{int(mem) / 1024**2:.1f} GiB",
            "kernel": platform.release(), "python": platform.python_version(), "openssl": ssl.OPENSSL_VERSION,
            "curl": curl, "load": " ".join(f"{x:.2f}" for x in os.getloadavg())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="2,4", help="file sizes in GiB, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="uploads per tool and size (medians compared)")
    parser.add_argument("--write", type=Path, help="write the results as Markdown to this file")
    parser.add_argument("--child", nargs=2, metavar=("FILE", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(Path(args.child[0]), args.child[1])
        return 0
    if shutil.which("curl") is None:
        raise SystemExit("curl is needed for the comparison: apt-get install curl")

    from builder.targets.pve.client import PveClient, volume_path
    from builder.targets.pve.config import PveConfig

    tmp = Path(tempfile.mkdtemp(prefix="pve-bench-", dir=os.environ.get("BENCH_TMP")))
    token_id, secret = "root@pam!bench", secrets.token_hex(16)
    sim, info = start_simulator(tmp / "sim", f"{token_id}={secret}")
    results = []
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PROXMOX_")}
        env.update(PROXMOX_URL=info["url"], PROXMOX_TOKEN_ID=token_id, PROXMOX_TOKEN_SECRET=secret,
                   PROXMOX_NODE=info["node"], PROXMOX_FINGERPRINT=info["fingerprint"],
                   IMGBUILD_CACHE=str(tmp / "cache"), PYTHONPATH=str(REPO))
        config = PveConfig(name="bench", url=info["url"], token_id=token_id, token_secret=secret, node=info["node"],
                           fingerprint=info["fingerprint"])
        client = PveClient(config)
        header = tmp / "auth.header"
        header.touch(mode=0o600)
        header.write_text(f"Authorization: PVEAPIToken={token_id}={secret}\n")
        for gib in (float(s) for s in args.sizes.split(",")):
            size = int(gib * GIB)
            path = tmp / f"bench-{gib:g}g.iso"
            make_file(path, size)
            row: dict = {"size_gib": gib, "imgbuild": [], "curl": []}
            name = f"bench-{gib:g}g.iso"
            digest = ""
            for rnd in range(args.rounds):
                # alternate who goes first: neither tool always inherits the other's page-cache writeback
                order = ("imgbuild", "curl") if rnd % 2 == 0 else ("curl", "imgbuild")
                for tool in order:
                    if tool == "imgbuild":
                        mine = run_imgbuild(path, name, env)
                        digest = mine["sha256"]
                    else:
                        digest = digest or sha256_of(path)
                        theirs = run_curl(path, name, digest, info, header, client)
                    client.run("DELETE", volume_path(info["node"], f"local:iso/{name}"), what="cleanup", wait=600)
                row["imgbuild"].append(mine)
                row["curl"].append(theirs)
                print(f"{gib:g} GiB round {rnd + 1}: imgbuild {size / mine['transfer_s'] / MIB:7.1f} MiB/s "
                      f"(peak RSS {mine['peak_rss_mb']:.0f} MB, hash {mine['hash_s']:.1f}s, task {mine['task_s']:.1f}s"
                      f", CPU {mine['cpu_s']:.1f}s) | curl {size / theirs['transfer_s'] / MIB:7.1f} MiB/s "
                      f"(CPU {theirs['cpu_s']:.1f}s)", flush=True)
            path.unlink()
            results.append(row)
    finally:
        sim.terminate()
        sim.wait(30)
        shutil.rmtree(tmp, ignore_errors=True)

    ok = True
    table = ["| size | imgbuild MiB/s, median (best) | curl -F MiB/s, median (best) | ratio of medians | "
             "imgbuild peak RSS | client CPU per GiB (imgbuild / curl) | sha256, first run | result |",
             "|---:|---:|---:|---:|---:|---:|---:|:---|"]
    rounds = ["| size | round | imgbuild MiB/s | curl MiB/s | imgbuild CPU s | curl CPU s | PVE import task (imgbuild) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in results:
        gib = row["size_gib"]
        size = gib * GIB
        best_mine = min(r["transfer_s"] for r in row["imgbuild"])
        best_curl = min(r["transfer_s"] for r in row["curl"])
        med_mine = statistics.median(r["transfer_s"] for r in row["imgbuild"])
        med_curl = statistics.median(r["transfer_s"] for r in row["curl"])
        rss = max(r["peak_rss_mb"] for r in row["imgbuild"])
        ratio = med_curl / med_mine
        passed = rss < RSS_LIMIT_MB and ratio >= RATIO_MIN
        ok = ok and passed
        cpu_mine = min(r["cpu_s"] for r in row["imgbuild"][1:] or row["imgbuild"]) / gib  # later rounds: hash cached
        cpu_curl = min(r["cpu_s"] for r in row["curl"]) / gib
        table.append(f"| {gib:g} GiB | {size / med_mine / MIB:.0f} ({size / best_mine / MIB:.0f}) | "
                     f"{size / med_curl / MIB:.0f} ({size / best_curl / MIB:.0f}) | {ratio:.2f} | "
                     f"{rss:.0f} MB | {cpu_mine:.2f} s / {cpu_curl:.2f} s | {row['imgbuild'][0]['hash_s']:.1f} s | "
                     f"{'pass' if passed else 'FAIL'} |")
        for i, (mine, theirs) in enumerate(zip(row["imgbuild"], row["curl"], strict=True), 1):
            rounds.append(f"| {gib:g} GiB | {i} | {size / mine['transfer_s'] / MIB:.0f} | "
                          f"{size / theirs['transfer_s'] / MIB:.0f} | {mine['cpu_s']:.1f} | {theirs['cpu_s']:.1f} | "
                          f"{mine['task_s']:.1f} s |")
    print("\n".join(table))
    print("\n".join(rounds))
    if args.write:
        write_markdown(args.write, table, rounds, machine(), args.rounds)
    return 0 if ok else 1


def write_markdown(path: Path, table: list[str], per_round: list[str], mach: dict[str, str], rounds: int) -> None:
    when = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    text = f"""# Proxmox VE upload benchmark

`bench/pve_upload.py` (one command: `.venv/bin/python bench/pve_upload.py --write bench/pve.md`) uploads
sparse 2 GiB and 4 GiB ISO files (random first MiB) to the PVE simulator running as its own process
(`python -m tests.pvesim`, HTTPS on loopback), alternately with imgbuild's PVE uploader (a separate
process: sha256, then one streamed multipart POST with the checksum fields, then PVE's import task)
and with `curl -F` (same fields, same endpoint, same TLS). Throughput is the POST alone, start to answer;
{rounds} rounds per tool, alternating, medians compared (best in brackets); peak RSS is the whole imgbuild upload
process (hashing included), from wait4(). Criteria: peak RSS < {RSS_LIMIT_MB} MB; imgbuild's median >= {RATIO_MIN}x curl's.

Last run: {when}

{chr(10).join(table)}

Every round (imgbuild's CPU includes starting Python and, in round 1, hashing the file):

{chr(10).join(per_round)}

Machine: {mach['cpu']}; {mach['memory']} RAM; Linux {mach['kernel']}; Python {mach['python']};
{mach['openssl']}; {mach['curl']}. Load average at the end: {mach['load']} (other work shared the
machine; the two tools alternate, so both see the same conditions).

Both clients and the simulator (which receives with 1 MiB `recv_into` reads, parses the multipart
stream and writes the file to disk) share the machine's cores: the numbers compare the clients,
not what a real PVE node would accept. Wall-clock throughput on a shared 2-core machine is noisy
(other work, page-cache writeback of the received files); client CPU per GiB is the steadier
measure of what each client costs.

History: the first version streamed through `MultipartEncoder.read` (1 MiB reads copied through its
BytesIO buffer, a fresh 1 MiB string per block). It cost about 1.5 CPU-seconds per GiB against curl's
0.75, and under load reached only 0.54-0.64x curl on 4 GiB. The uploader now lets MultipartEncoder
frame the form (boundary, fields, part headers) and streams the file between that head and the
closing boundary from one reused buffer (`builder/targets/pve/upload.py: FileForm`).
"""
    path.write_text(text)


if __name__ == "__main__":
    sys.exit(main())
