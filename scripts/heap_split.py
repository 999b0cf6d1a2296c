"""Sums heaptrack's peak-heap stacks by owner: the simulator or flotilla.

Input: heaptrack_print's flamegraph output with `--flamegraph-cost-type
peak` (one `frame;frame;... bytes` line per stack, bytes held by that stack
when the heap peaked; the lines add up to the peak), the bench's JSON report
and the job count. Prints one JSON object.
"""
import json
import sys
from collections import Counter

# Where flotilla's own bytes sit, by the first matching frame name.
PARTS = [
    ("simulator", "flotilla_sim::"),
    ("saga_store", "embedded::store"),
    ("bus", "embedded::bus"),
    ("azure_clients", "flotilla_azure::"),
    ("engine", "flotilla_core::"),
]


def main(stacks_path, report_path, jobs):
    by = Counter()
    for line in open(stacks_path, encoding="utf-8", errors="replace"):
        stack, _, n = line.rstrip("\n").rpartition(" ")
        if not n.isdigit():
            continue
        part = next((name for name, frame in PARTS if frame in stack), "other")
        by[part] += int(n)
    total = sum(by.values())
    sim = by["simulator"]
    own = total - sim
    mb = lambda b: round(b / 1e6, 1)
    report = json.load(open(report_path))
    print(json.dumps({
        "jobs": jobs,
        "succeeded": report.get("succeeded"),
        "peak_heap_mb": mb(total),
        "simulator_mb": mb(sim),
        "flotilla_mb": mb(own),
        "flotilla_kb_per_job": round(own / 1e3 / jobs, 1),
        "flotilla_parts_mb": {k: mb(v) for k, v in by.most_common() if k != "simulator"},
        "peak_rss_mb_with_heaptrack": report.get("peak_rss_mb"),
    }, indent=1))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]))
