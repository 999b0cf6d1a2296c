"""Tests for scripts/bench_ab.py (the driver of scripts/bench-ab.sh): the
alternation, the summary's arithmetic and verdict, and how it runs a build,
with a stand-in `flotilla` that prints a canned report.

Run: python3 -m unittest discover -s scripts/tests   (from the repo root)
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import stat
import sys
import tempfile
import unittest
from pathlib import Path

SCRIPTS = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(SCRIPTS))

import bench_ab  # noqa: E402


def run(rate: float, cpu: float, busy: float = 1.8, rss: float = 130.0) -> dict:
    """The figures of one `flotilla bench --output json` report."""
    return {"sagas_per_s": rate, "cpu_ms_per_job": cpu, "cpu_cores_busy": busy,
            "peak_rss_mb": rss, "seconds": 1.0}


class OrderTest(unittest.TestCase):
    def test_each_build_goes_first_in_every_other_pair(self):
        self.assertEqual([bench_ab.order(i) for i in range(4)],
                         [("a", "b"), ("b", "a"), ("a", "b"), ("b", "a")])


class SummaryTest(unittest.TestCase):
    def test_means_ranges_and_paired_differences(self):
        pairs = [{"a": run(500, 3.0), "b": run(520, 2.9)},
                 {"a": run(600, 2.8), "b": run(610, 2.7)},
                 {"a": run(550, 2.9), "b": run(570, 2.8)}]
        s = bench_ab.summarise(pairs)
        self.assertEqual(s["pairs"], 3)
        self.assertEqual(s["a"]["sagas_per_s"], {"mean": 550.0, "min": 500, "max": 600})
        self.assertEqual(s["b"]["sagas_per_s"]["mean"], 566.67)
        self.assertEqual(s["delta_sagas_per_s"],
                         {"mean": 16.67, "min": 10, "max": 20, "percent": 3.0})
        self.assertEqual(s["delta_cpu_ms_per_job"]["mean"], -0.1)
        self.assertEqual(s["b_ahead_in_pairs"], 3)
        self.assertEqual(s["verdict"], "b faster in every pair")

    def test_pairs_that_disagree_are_called_noise(self):
        # The means differ by 15 jobs/s, but one pair of three goes the other way.
        pairs = [{"a": run(500, 3.0), "b": run(540, 2.9)},
                 {"a": run(600, 2.8), "b": run(590, 2.9)},
                 {"a": run(550, 2.9), "b": run(565, 2.8)}]
        s = bench_ab.summarise(pairs)
        self.assertEqual(s["b_ahead_in_pairs"], 2)
        self.assertEqual(s["verdict"], "no difference the noise does not explain")

    def test_a_slower_change_is_called_slower(self):
        pairs = [{"a": run(500, 3.0), "b": run(480, 3.1)},
                 {"a": run(600, 2.8), "b": run(590, 2.9)}]
        self.assertEqual(bench_ab.summarise(pairs)["verdict"], "b slower in every pair")


def stand_in(dir_: Path, name: str, report: dict) -> Path:
    """An executable that prints `report` as `flotilla bench --output json` would."""
    path = dir_ / name
    path.write_text("#!/bin/sh\necho 'progress on stdout first'\n"
                    f"echo '{json.dumps(report)}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


class MainTest(unittest.TestCase):
    def setUp(self):
        self.dir = Path(tempfile.mkdtemp())

    def tearDown(self):
        for p in self.dir.iterdir():
            os.remove(p)
        os.rmdir(self.dir)

    def test_alternates_the_builds_and_writes_every_run_and_the_summary(self):
        a = stand_in(self.dir, "a", {"jobs": 10, "succeeded": 10, **run(400, 4.0)})
        b = stand_in(self.dir, "b", {"jobs": 10, "succeeded": 10, **run(500, 3.5)})
        out = self.dir / "result.json"
        with contextlib.redirect_stdout(io.StringIO()) as printed:
            code = bench_ab.main(["--a", str(a), "--b", str(b), "--pairs", "2", "--jobs", "10",
                                  "--labels", "old,new", "--out", str(out)])
        self.assertEqual(code, 0)
        result = json.loads(out.read_text())
        self.assertEqual(len(result["runs"]), 2)
        self.assertEqual(result["summary"]["delta_sagas_per_s"]["mean"], 100)
        self.assertEqual(result["labels"], {"a": "old", "b": "new"})
        text = printed.getvalue()
        self.assertLess(text.index("pair 1 a (old)"), text.index("pair 1 b (new)"))
        self.assertLess(text.index("pair 2 b (new)"), text.index("pair 2 a (old)"))
        self.assertIn("b faster in every pair", text)

    def test_a_run_where_a_job_did_not_succeed_is_refused(self):
        a = stand_in(self.dir, "a", {"jobs": 10, "succeeded": 9, **run(400, 4.0)})
        with self.assertRaisesRegex(RuntimeError, "only 9 of 10 jobs Succeeded"):
            bench_ab.bench(str(a), 10, "in-process")

    def test_a_missing_binary_is_named(self):
        with contextlib.redirect_stderr(io.StringIO()) as err, self.assertRaises(SystemExit):
            bench_ab.main(["--a", str(self.dir / "nope"), "--b", str(self.dir / "nope")])
        self.assertIn("--a: no such binary", err.getvalue())


if __name__ == "__main__":
    unittest.main()
