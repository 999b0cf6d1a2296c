"""Alternates `flotilla bench` between two builds and says whether the second
is faster than the noise: the driver of scripts/bench-ab.sh.

This VM's pace moves by up to a third between hours, so two builds compare
only in runs alternated within the same minutes. Each pair runs both builds
back to back, `a` first in even pairs and `b` first in odd ones (so neither
always gets the warmer or the colder machine), and the verdict rests on the
pairs' differences, not on two separate averages.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

# The side-by-side driver runs `flotilla bench` and reads its report; so does this.
sys.path.insert(0, str(Path(__file__).resolve().parent / "bench_peers"))
import run as peers  # noqa: E402

# What each run reports, from `flotilla bench --output json`.
FIGURES = ("sagas_per_s", "cpu_ms_per_job", "cpu_cores_busy", "peak_rss_mb")


def order(pair: int) -> tuple[str, str]:
    """Which build runs first in pair `pair` (0-based)."""
    return ("a", "b") if pair % 2 == 0 else ("b", "a")


def bench(binary: str, jobs: int, simulator: str) -> dict:
    """One `flotilla bench` run; its JSON report. A failed run, or one where
    not every job Succeeded, is an error: its figures would mislead."""
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as work:
        flotilla = argparse.Namespace(flotilla=str(Path(binary).resolve()))
        report = peers.run_flotilla(flotilla, jobs, Path(work), simulator)["flotilla"]
    if report.get("succeeded") != report.get("jobs"):
        raise RuntimeError(f"{binary}: only {report.get('succeeded')} of {report.get('jobs')} "
                           "jobs Succeeded")
    return report


def summarise(pairs: list[dict]) -> dict:
    """Per build: mean, min and max of each figure. Across pairs: the mean
    and range of `b - a` in jobs/s and CPU ms, how many pairs `b` led in
    jobs/s, and whether every pair agrees (the only verdict this VM's noise
    allows with a handful of pairs)."""
    out: dict = {"pairs": len(pairs)}
    for build in ("a", "b"):
        out[build] = {}
        for f in FIGURES:
            values = [p[build][f] for p in pairs if f in p[build]]
            if values:
                out[build][f] = {"mean": round(statistics.fmean(values), 2),
                                 "min": min(values), "max": max(values)}
    rate = [p["b"]["sagas_per_s"] - p["a"]["sagas_per_s"] for p in pairs]
    cpu = [p["b"]["cpu_ms_per_job"] - p["a"]["cpu_ms_per_job"] for p in pairs]
    a_mean = statistics.fmean(p["a"]["sagas_per_s"] for p in pairs)
    out["delta_sagas_per_s"] = {"mean": round(statistics.fmean(rate), 2),
                                "min": round(min(rate), 2), "max": round(max(rate), 2),
                                "percent": round(100 * statistics.fmean(rate) / a_mean, 1)}
    out["delta_cpu_ms_per_job"] = {"mean": round(statistics.fmean(cpu), 3),
                                   "min": round(min(cpu), 3), "max": round(max(cpu), 3)}
    ahead = sum(1 for d in rate if d > 0)
    out["b_ahead_in_pairs"] = ahead
    if ahead == len(pairs):
        out["verdict"] = "b faster in every pair"
    elif ahead == 0:
        out["verdict"] = "b slower in every pair"
    else:
        out["verdict"] = "no difference the noise does not explain"
    return out


def print_summary(s: dict, labels: dict) -> None:
    names = {build: f"{build} {labels[build]}" for build in ("a", "b")}
    width = max(len("build"), *(len(n) for n in names.values()))
    print(f"\n{s['pairs']} alternating pairs")
    print(f"{'build':<{width}} {'jobs/s mean':>12} {'min':>8} {'max':>8} {'CPU ms/job':>11} "
          f"{'cores busy':>11}")
    for build in ("a", "b"):
        r = s[build]
        print(f"{names[build]:<{width}} {r['sagas_per_s']['mean']:>12} "
              f"{r['sagas_per_s']['min']:>8} {r['sagas_per_s']['max']:>8} "
              f"{r['cpu_ms_per_job']['mean']:>11} {r['cpu_cores_busy']['mean']:>11}")
    d, c = s["delta_sagas_per_s"], s["delta_cpu_ms_per_job"]
    print(f"b - a: {d['mean']:+} jobs/s ({d['percent']:+}%), pairs {d['min']:+} to {d['max']:+}; "
          f"CPU {c['mean']:+} ms/job, pairs {c['min']:+} to {c['max']:+}")
    print(f"b ahead in {s['b_ahead_in_pairs']} of {s['pairs']} pairs: {s['verdict']}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--a", required=True, help="the baseline flotilla binary")
    ap.add_argument("--b", required=True, help="the flotilla binary to compare with it")
    ap.add_argument("--labels", default="a,b", help="names of the two builds, for the table")
    ap.add_argument("--pairs", type=int, default=6, help="alternating pairs (default 6)")
    ap.add_argument("--jobs", type=int, default=1000, help="jobs per run (default 1000)")
    ap.add_argument("--simulator", default="in-process", choices=("in-process", "none", "apart"))
    ap.add_argument("--out", help="where to write every run and the summary as JSON")
    args = ap.parse_args(argv)
    if args.pairs < 1 or args.jobs < 1:
        ap.error("--pairs and --jobs must be at least 1")
    names = args.labels.split(",")
    if len(names) != 2:
        ap.error("--labels takes two names, comma-separated")
    labels = dict(zip(("a", "b"), names))
    binaries = {"a": args.a, "b": args.b}
    for build, path in binaries.items():
        if not Path(path).is_file():
            ap.error(f"--{build}: no such binary: {path}")
    pairs = []
    for i in range(args.pairs):
        pair = {}
        for build in order(i):
            report = bench(binaries[build], args.jobs, args.simulator)
            pair[build] = {f: report[f] for f in FIGURES if f in report}
            print(f"pair {i + 1} {build} ({labels[build]}): {report['sagas_per_s']} jobs/s, "
                  f"{report['cpu_ms_per_job']} CPU ms/job, {report['cpu_cores_busy']} cores busy",
                  flush=True)
        pairs.append(pair)
    summary = summarise(pairs)
    print_summary(summary, labels)
    if args.out:
        Path(args.out).write_text(json.dumps(
            {"labels": labels, "jobs": args.jobs, "simulator": args.simulator,
             "runs": pairs, "summary": summary}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
