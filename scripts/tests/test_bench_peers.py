"""Tests for scripts/bench_peers/run.py (the driver of scripts/bench-peers.sh):
the summary table's arithmetic, the /proc accounting it measures engines with,
and its refusal of bad arguments. The engines themselves are not run here.

Run: python3 -m unittest discover -s scripts/tests   (from the repo root)
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import time
import unittest
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SCRIPTS / "bench_peers"))

import run  # noqa: E402


def record(engine: str, jobs: int, rate: float, cpu: float = 1.0, rss: float = 10.0, **extra):
    return {"engine": engine, "jobs": jobs, "jobs_per_s": rate, "cpu_ms_per_job": cpu,
            "peak_rss_mb": rss, **extra}


class SummaryTest(unittest.TestCase):
    def test_min_median_max_and_ratio_per_job_count(self):
        runs = [record("flotilla", 100, r, cpu=c) for r, c in ((300, 2.0), (100, 4.0), (200, 3.0))]
        runs += [record("dbos", 100, r, rss=m) for r, m in ((20, 70), (40, 90), (30, 80))]
        runs += [record("flotilla", 10, 50), record("dbos", 10, 25)]
        rows = run.summarise(runs, ["flotilla", "dbos"], [100, 10])
        flotilla, dbos = rows[0], rows[1]
        self.assertEqual((flotilla["jobs_per_s_min"], flotilla["jobs_per_s_median"],
                          flotilla["jobs_per_s_max"]), (100, 200, 300))
        self.assertEqual(flotilla["cpu_ms_per_job"], 3.0)
        self.assertEqual(dbos["peak_rss_mb"], 90)
        self.assertAlmostEqual(dbos["flotilla_over_peer"], 200 / 30)
        self.assertAlmostEqual(rows[3]["flotilla_over_peer"], 2.0)

    def test_failed_runs_are_counted_not_averaged(self):
        runs = [record("flotilla", 5, 100), record("restate", 5, 10),
                record("restate", 5, 999, error="only 4 of 5 jobs succeeded"),
                {"engine": "dbos", "jobs": 5, "error": "dbos: exited with 1"}]
        rows = {r["engine"]: r for r in run.summarise(runs, ["flotilla", "restate", "dbos"], [5])}
        self.assertEqual(rows["restate"]["jobs_per_s_max"], 10)
        self.assertEqual(rows["restate"]["failed_runs"], 1)
        self.assertNotIn("jobs_per_s_median", rows["dbos"])
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            run.print_table(list(rows.values()))
        self.assertIn("| dbos (1 failed) | 5 | failed |", table.getvalue())
        self.assertIn("| restate (1 failed) | 5 | 10.0 | 10.0 | 10.0 |", table.getvalue())
        self.assertIn("10.0×", table.getvalue())

    def test_the_engine_alone_gets_a_ratio_of_its_own(self):
        runs = [record("flotilla", 5, 100), record("flotilla-engine", 5, 400),
                record("restate", 5, 50)]
        rows = {r["engine"]: r for r in
                run.summarise(runs, ["flotilla", "flotilla-engine", "restate"], [5])}
        self.assertAlmostEqual(rows["restate"]["flotilla_over_peer"], 2.0)
        self.assertAlmostEqual(rows["restate"]["engine_over_peer"], 8.0)
        self.assertNotIn("engine_over_peer", rows["flotilla"])
        table = io.StringIO()
        with contextlib.redirect_stdout(table):
            run.print_table(list(rows.values()))
        self.assertIn("| restate | 5 | 50.0 | 50.0 | 50.0 | 1.00 | 10 | 2.0× | 8.0× |",
                      table.getvalue())


class ProcAccountingTest(unittest.TestCase):
    def test_cpu_of_a_process_tree_counts_its_children(self):
        code = ("import subprocess, sys; c = subprocess.Popen([sys.executable, '-c', "
                "'while True: pass']); sys.stdin.read(); c.kill()")
        parent = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE)
        try:
            deadline = time.monotonic() + 10
            while len(run.descendants(parent.pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertEqual(len(run.descendants(parent.pid)), 2)
            before = run.cpu_seconds([parent.pid])
            while run.cpu_seconds([parent.pid]) - before < 0.1 and time.monotonic() < deadline:
                time.sleep(0.05)
            self.assertGreaterEqual(run.cpu_seconds([parent.pid]) - before, 0.1)
            self.assertGreater(run.peak_rss_mb([parent.pid]), 1.0)
        finally:
            parent.stdin.close()
            parent.wait(timeout=10)


class FlotillaApartTest(unittest.TestCase):
    def test_apart_reports_the_bench_process_alone(self):
        """With the simulator apart, the figures are the bench's own (wait4
        would add the simulator child's CPU), and the bench is asked for it."""
        import tempfile
        from types import SimpleNamespace
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            fake = work / "flotilla"
            fake.write_text(
                "#!/bin/sh\n"
                "echo \"$@\" > args.txt\n"
                "echo '{\"seconds\": 2.0, \"succeeded\": 10, \"cpu_ms_per_job\": 7.5, "
                "\"peak_rss_mb\": 33.0}'\n")
            fake.chmod(0o755)
            args = SimpleNamespace(flotilla=str(fake))
            result = run.run_flotilla_apart(args, 10, work)
            self.assertIn("--simulator apart", (work / "args.txt").read_text())
            self.assertAlmostEqual(result["cpu_s"], 0.075)
            self.assertEqual(result["peak_rss_mb"], 33.0)
            together = run.run_flotilla(args, 10, work)
            self.assertIn("--simulator in-process", (work / "args.txt").read_text())
            self.assertNotEqual(together["peak_rss_mb"], 33.0)
            run.run_flotilla_engine(args, 10, work)
            self.assertIn("--simulator none", (work / "args.txt").read_text())


class ArgumentsTest(unittest.TestCase):
    def refusal(self, *argv: str) -> str:
        proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_peers" / "run.py"), *argv,
                               "--flotilla", "f", "--python", "p", "--node-dir", "n",
                               "--out", "o"], capture_output=True, text=True)
        self.assertEqual(proc.returncode, 2, proc.stderr)
        return proc.stderr

    def test_bad_arguments_name_the_option(self):
        self.assertIn("--jobs", self.refusal("--jobs", "200,lots"))
        self.assertIn("--jobs", self.refusal("--jobs", "0"))
        self.assertIn("--rounds", self.refusal("--rounds", "0"))
        self.assertIn("--engines", self.refusal("--engines", "flotilla,temporal"))


if __name__ == "__main__":
    unittest.main()
