"""Driver of scripts/bench-peers.sh: runs the same cluster-shaped job (shape.json)
on flotilla, DBOS Transact and Restate, alternating engines within each round,
and prints one table (plus a JSON file) of jobs/s, CPU per job and peak RSS.

Standard library only; Linux only (reads /proc). The shell script installs the
peers and builds flotilla, then calls this with their paths.
"""

import argparse
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

HERE = Path(__file__).resolve().parent
CLK_TCK = os.sysconf("SC_CLK_TCK")
RUN_TIMEOUT_S = 1800  # one engine's run of one job count

DURABILITY = {
    "flotilla": "embedded SQLite store, WAL journal, synchronous=NORMAL "
                "(in-process bus and Azure simulator)",
    "flotilla-apart": "as flotilla, with the Azure simulator in a child process over loopback "
                      "HTTP; CPU and peak RSS are flotilla's process alone",
    "flotilla-engine": "as flotilla, with no simulator: each Azure call answered by an in-memory "
                       "stand-in (the tests' fake cloud), as each checkpoint's work is in the "
                       "peers' jobs",
    "dbos": "SQLite system database, WAL journal, synchronous=NORMAL "
            "(set by this harness; DBOS alone leaves SQLite's rollback journal "
            "and synchronous=FULL)",
    "restate": "restate-server defaults: one node, replicated bifrost loglet on its own "
               "log-server (replication 1, RocksDB WAL fsync'd), RocksDB partition store",
}


# ---- process accounting from /proc ------------------------------------------

def descendants(root: int) -> list[int]:
    """root and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, []).append(int(entry))
    found, todo = [], [root]
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo.extend(children.get(pid, []))
    return found


def cpu_seconds(roots: list[int]) -> float:
    """user+sys CPU so far of the processes under roots (all their threads)."""
    total = 0
    for root in roots:
        for pid in descendants(root):
            try:
                fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            total += int(fields[11]) + int(fields[12])  # utime, stime
    return total / CLK_TCK


def peak_rss_mb(roots: list[int]) -> float:
    """Sum of each process's own peak resident set (VmHWM) under roots."""
    total_kb = 0
    for root in roots:
        for pid in descendants(root):
            try:
                status = Path(f"/proc/{pid}/status").read_text()
            except OSError:
                continue
            for line in status.splitlines():
                if line.startswith("VmHWM:"):
                    total_kb += int(line.split()[1])
    return total_kb / 1024


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def machine() -> dict:
    model = next((line.split(":", 1)[1].strip()
                  for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown")
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal:"))
    return {"nproc": len(os.sched_getaffinity(0)), "cpu": model,
            "mem_gb": round(mem_kb / 1024 / 1024, 1), "kernel": os.uname().release,
            "load_average_at_start": load_average()}


# ---- helpers -------------------------------------------------------------------

def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def http(method: str, url: str, body: dict | None = None) -> int:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method,
                                 headers={"content-type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as res:
            return res.status
    except urllib.error.HTTPError as e:
        return e.code
    except OSError:
        return 0


def wait_until(what: str, check, proc: subprocess.Popen, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        if proc.poll() is not None:
            raise RuntimeError(f"{what}: process exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not ready after {seconds:.0f} s")
        time.sleep(0.1)


def read_line(proc: subprocess.Popen, what: str) -> str:
    line = proc.stdout.readline()
    if not line:
        raise RuntimeError(f"{what}: exited with {proc.wait()} before answering")
    return line.strip()


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, SIGKILL after 30 s; then closes its pipes."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            with contextlib.suppress(OSError):
                pipe.close()


def spawn(argv: list[str], log: Path, pipe_stdout: bool = True, **kwargs) -> subprocess.Popen:
    """Starts an engine process with its stderr (and stdout, unless piped) in log."""
    with open(log, "w") as sink:
        return subprocess.Popen(argv, stdout=subprocess.PIPE if pipe_stdout else sink,
                                stderr=sink, text=True, **kwargs)


def measured(roots: list[int], run) -> tuple[dict, float, float]:
    """Runs run() between two CPU samples of the processes under roots; kills
    them if it takes longer than RUN_TIMEOUT_S, so a stuck engine fails its run
    (its pipe closes) instead of hanging the benchmark."""
    def kill():
        for root in roots:
            with contextlib.suppress(ProcessLookupError):
                os.kill(root, signal.SIGKILL)

    watchdog = threading.Timer(RUN_TIMEOUT_S, kill)
    watchdog.start()
    try:
        before = cpu_seconds(roots)
        result = run()
        cpu = cpu_seconds(roots) - before
        return result, cpu, peak_rss_mb(roots)
    finally:
        watchdog.cancel()


# ---- the engines -----------------------------------------------------------------

def run_flotilla(args, jobs: int, work: Path, simulator: str = "in-process") -> dict:
    """`flotilla bench` is one process: its own timer, and wait4's rusage for the
    whole process (start-up and the in-process Azure simulator included).
    With the simulator apart, wait4 would add the reaped child's CPU, so CPU
    and peak RSS are the bench's own figures for its process over the run."""
    cmd = [args.flotilla, "bench", "--jobs", str(jobs), "--output", "json",
           "--simulator", simulator]
    proc = spawn(cmd, work / "flotilla.err", cwd=work)
    with proc.stdout:
        out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    try:
        report = json.loads(out.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise RuntimeError(f"flotilla bench exited {proc.returncode}: "
                           f"{(work / 'flotilla.err').read_text()[-2000:]}")
    if simulator == "apart":
        cpu_s, rss = report["cpu_ms_per_job"] * jobs / 1000, report["peak_rss_mb"]
    else:
        cpu_s, rss = usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024
    return {"seconds": report["seconds"], "succeeded": report["succeeded"], "cpu_s": cpu_s,
            "peak_rss_mb": rss, "flotilla": report}


def run_flotilla_apart(args, jobs: int, work: Path) -> dict:
    return run_flotilla(args, jobs, work, simulator="apart")


def run_flotilla_engine(args, jobs: int, work: Path) -> dict:
    return run_flotilla(args, jobs, work, simulator="none")


def run_dbos(args, jobs: int, work: Path) -> dict:
    """One Python process; measured from "go" (DBOS launched) to all workflows done."""
    proc = spawn([args.python, str(HERE / "dbos_job.py"), str(jobs), str(work / "dbos.sqlite")],
                 work / "dbos.err", stdin=subprocess.PIPE, cwd=work)
    try:
        if read_line(proc, "dbos") != "ready":
            raise RuntimeError("dbos: expected 'ready'")

        def go():
            proc.stdin.write("go\n")
            proc.stdin.flush()
            return json.loads(read_line(proc, "dbos"))

        report, cpu, rss = measured([proc.pid], go)
    except RuntimeError as e:
        raise RuntimeError(f"{e}: {(work / 'dbos.err').read_text()[-2000:]}")
    finally:
        proc.stdin.close()
        stop(proc)
    return {"seconds": report["seconds"], "succeeded": report["succeeded"], "cpu_s": cpu,
            "peak_rss_mb": rss,
            "durability_in_force": {"journal_mode": report["journal_mode"],
                                    "synchronous": report["synchronous"]}}


def run_restate(args, jobs: int, work: Path) -> dict:
    """A fresh restate-server (throwaway data dir, loopback ports) and the node
    service; measured (server + service) from "go" (service registered, Ping
    answered) until every workflow's attach has returned."""
    node_dir = Path(args.node_dir)
    server_bin = node_dir / "node_modules/@restatedev/restate-server-linux-x64/bin/restate-server"
    ingress, admin, fabric, service_port = free_ports(4)
    # The server's invoker makes a directory in the temporary dir per run and
    # leaves it behind: keep it inside the run's throwaway dir.
    tmp = work / "tmp"
    tmp.mkdir()
    env = dict(os.environ,
               TMPDIR=str(tmp),
               RESTATE_INGRESS__BIND_ADDRESS=f"127.0.0.1:{ingress}",
               RESTATE_ADMIN__BIND_ADDRESS=f"127.0.0.1:{admin}",
               RESTATE_DISABLE_TELEMETRY="true",
               RESTATE_LOG_FILTER="warn",
               RESTATE_LOGGING="WARN")
    server = spawn([str(server_bin), "--no-logo", "--listen-mode", "tcp", "--node-name", "bench",
                    "--base-dir", str(work / "restate-data"),
                    "--bind-address", f"127.0.0.1:{fabric}"],
                   work / "restate-server.log", pipe_stdout=False, env=env, cwd=work)
    service = client = None
    try:
        wait_until("restate-server admin",
                   lambda: http("GET", f"http://127.0.0.1:{admin}/health") == 200, server)
        service = spawn(["node", str(node_dir / "restate_service.mjs"), str(service_port)],
                        work / "restate-service.log", env=env)
        if read_line(service, "restate service") != "ready":
            raise RuntimeError("restate service: expected 'ready'")
        wait_until("registering the service",
                   lambda: http("POST", f"http://127.0.0.1:{admin}/deployments",
                                {"uri": f"http://127.0.0.1:{service_port}"}) in (200, 201),
                   server)
        client = spawn(["node", str(node_dir / "restate_client.mjs"),
                        f"http://127.0.0.1:{ingress}", str(jobs)],
                       work / "restate-client.err", stdin=subprocess.PIPE)
        if read_line(client, "restate client") != "ready":
            raise RuntimeError("restate client: expected 'ready'")

        def go():
            client.stdin.write("go\n")
            client.stdin.flush()
            return json.loads(read_line(client, "restate client"))

        report, cpu, rss = measured([server.pid, service.pid], go)
    except RuntimeError as e:
        logs = "".join((work / f).read_text()[-1500:] for f in
                       ("restate-server.log", "restate-service.log", "restate-client.err")
                       if (work / f).exists())
        raise RuntimeError(f"{e}: {logs}")
    finally:
        for proc in (client, service, server):
            if proc is not None:
                stop(proc)
    return {"seconds": report["seconds"], "succeeded": report["succeeded"], "cpu_s": cpu,
            "peak_rss_mb": rss}


ENGINES = {"flotilla": run_flotilla, "flotilla-apart": run_flotilla_apart,
           "flotilla-engine": run_flotilla_engine, "dbos": run_dbos, "restate": run_restate}


# ---- the table -------------------------------------------------------------------

def summarise(runs: list[dict], engines: list[str], job_counts: list[int]) -> list[dict]:
    """One row per engine and job count; a peer's row also gets its ratios:
    `flotilla_over_peer` (flotilla with the simulator) and `engine_over_peer`
    (flotilla on the in-memory stand-in, the peers' kind of work)."""
    rows = []
    for jobs in job_counts:
        medians = {}
        for engine in engines:
            ok = [r for r in runs if r["engine"] == engine and r["jobs"] == jobs and "error" not in r]
            failed = sum(1 for r in runs if r["engine"] == engine and r["jobs"] == jobs
                         and "error" in r)
            row = {"engine": engine, "jobs": jobs, "runs": len(ok), "failed_runs": failed}
            if ok:
                rates = [r["jobs_per_s"] for r in ok]
                row.update(jobs_per_s_min=min(rates), jobs_per_s_median=statistics.median(rates),
                           jobs_per_s_max=max(rates),
                           cpu_ms_per_job=statistics.median(r["cpu_ms_per_job"] for r in ok),
                           peak_rss_mb=max(r["peak_rss_mb"] for r in ok))
                medians[engine] = row["jobs_per_s_median"]
            rows.append(row)
        for row in rows:
            if row["jobs"] != jobs or row["engine"].startswith("flotilla"):
                continue
            peer = row.get("jobs_per_s_median")
            for ours, key in (("flotilla", "flotilla_over_peer"),
                              ("flotilla-engine", "engine_over_peer")):
                if peer and medians.get(ours):
                    row[key] = medians[ours] / peer
    return rows


def print_table(rows: list[dict]) -> None:
    head = ("engine", "jobs", "jobs/s min", "median", "max", "CPU ms/job", "peak RSS MB",
            "flotilla/peer", "flotilla-engine/peer")
    print("| " + " | ".join(head) + " |")
    print("|" + "---|" * len(head))
    for r in rows:
        if "jobs_per_s_median" not in r:
            cells = [r["engine"], str(r["jobs"]), "failed", "", "", "", "", "", ""]
        else:
            ratios = [f"{r[k]:.1f}×" if k in r else "—"
                      for k in ("flotilla_over_peer", "engine_over_peer")]
            cells = [r["engine"], str(r["jobs"]), f"{r['jobs_per_s_min']:.1f}",
                     f"{r['jobs_per_s_median']:.1f}", f"{r['jobs_per_s_max']:.1f}",
                     f"{r['cpu_ms_per_job']:.2f}", f"{r['peak_rss_mb']:.0f}", *ratios]
        if r["failed_runs"]:
            cells[0] += f" ({r['failed_runs']} failed)"
        print("| " + " | ".join(cells) + " |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--jobs", default="1000", help="comma-separated job counts (default 1000)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds per job count (default 3)")
    ap.add_argument("--engines", default="flotilla,flotilla-apart,flotilla-engine,dbos,restate",
                    help="which engines, in the order they alternate (default all five)")
    ap.add_argument("--flotilla", required=True, help="the release flotilla binary")
    ap.add_argument("--python", required=True, help="python of the DBOS venv")
    ap.add_argument("--node-dir", required=True, help="folder with the Restate node_modules")
    ap.add_argument("--out", required=True, help="where to write the JSON results")
    args = ap.parse_args()
    # The engines run in throwaway working folders: make the paths absolute.
    args.flotilla, args.python, args.node_dir = (
        str(Path(p).absolute()) for p in (args.flotilla, args.python, args.node_dir))
    try:
        job_counts = [int(j) for j in args.jobs.split(",")]
    except ValueError:
        ap.error(f"--jobs: expected comma-separated whole numbers, got '{args.jobs}'")
    if any(j < 1 or j > 100_000 for j in job_counts):
        ap.error("--jobs: every count must be between 1 and 100000")
    if args.rounds < 1:
        ap.error("--rounds: must be at least 1")
    engines = args.engines.split(",")
    unknown = [e for e in engines if e not in ENGINES]
    if unknown:
        ap.error(f"--engines: unknown {unknown} (known: {', '.join(ENGINES)})")

    info = machine()
    print(f"machine: {info['nproc']} CPUs ({info['cpu']}), {info['mem_gb']} GB, "
          f"load average {info['load_average_at_start']}")
    for engine in engines:
        print(f"durability, {engine}: {DURABILITY[engine]}")
    runs = []
    for jobs in job_counts:
        for round_no in range(1, args.rounds + 1):
            for engine in engines:
                load = load_average()
                record = {"engine": engine, "jobs": jobs, "round": round_no,
                          "load_average_before": load}
                work = Path(tempfile.mkdtemp(prefix=f"bench-peers-{engine}-"))
                try:
                    result = ENGINES[engine](args, jobs, work)
                    record.update(result)
                    record["jobs_per_s"] = jobs / result["seconds"]
                    record["cpu_ms_per_job"] = result["cpu_s"] * 1000 / jobs
                    if result["succeeded"] != jobs:
                        record["error"] = f"only {result['succeeded']} of {jobs} jobs succeeded"
                except (RuntimeError, OSError, ValueError, KeyError) as e:
                    record["error"] = str(e)
                finally:
                    shutil.rmtree(work, ignore_errors=True)
                runs.append(record)
                line = (f"round {round_no}/{args.rounds}, {jobs} jobs, {engine:<8} "
                        f"(load before: {load}): ")
                if "jobs_per_s" in record:
                    line += (f"{record['jobs_per_s']:.1f} jobs/s, "
                             f"{record['cpu_ms_per_job']:.2f} CPU ms/job, "
                             f"peak RSS {record['peak_rss_mb']:.0f} MB")
                if "error" in record:
                    line += f" FAILED: {record['error'][:2000]}"
                print(line, flush=True)
    rows = summarise(runs, engines, job_counts)
    print()
    print_table(rows)
    Path(args.out).write_text(json.dumps({"machine": info, "durability": DURABILITY,
                                          "shape": json.loads((HERE / "shape.json").read_text()),
                                          "rounds": args.rounds, "runs": runs,
                                          "summary": rows}, indent=2) + "\n")
    print(f"\nJSON: {args.out}")
    return 1 if any("error" in r for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
