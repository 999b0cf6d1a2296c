"""The DBOS Transact peer of scripts/bench-peers.sh.

Runs N cluster-shaped workflows (shape.json: 6 steps, 17 checkpoints, one
@DBOS.step per checkpoint) at once on a SQLite system database. Talks to the
driver (run.py) on stdin/stdout so that only the run itself is measured:
prints "ready" once DBOS is launched, waits for "go", starts every workflow,
waits for all of them, prints one JSON line of results, then exits when
stdin closes.
"""

import json
import sqlite3
import sys
import time
from pathlib import Path

import sqlalchemy as sa
from dbos import DBOS

SHAPE = json.loads((Path(__file__).parent / "shape.json").read_text())["steps"]
SYNCHRONOUS_NAMES = {0: "OFF", 1: "NORMAL", 2: "FULL", 3: "EXTRA"}


@sa.event.listens_for(sa.engine.Engine, "connect")
def _durability(dbapi_conn, _record):
    """flotilla's embedded store settings on every connection DBOS opens:
    WAL journal, synchronous=NORMAL (DBOS itself sets neither)."""
    if isinstance(dbapi_conn, sqlite3.Connection):
        dbapi_conn.execute("PRAGMA journal_mode=WAL")
        dbapi_conn.execute("PRAGMA synchronous=NORMAL")


def azure_stand_in(job: int, step: str, k: int) -> str:
    """What a provisioning call returns, with no call made: a resource id."""
    return f"/subscriptions/0/resourceGroups/bench/providers/Bench/{step}/job{job}-{k}"


@DBOS.step()
def checkpoint(job: int, step: str, k: int) -> str:
    return azure_stand_in(job, step, k)


@DBOS.workflow()
def cluster_job(job: int) -> str:
    for step in SHAPE:
        for k in range(step["checkpoints"]):
            checkpoint(job, step["name"], k)
    return "Succeeded"


def durability_in_force(dbos: DBOS) -> dict:
    """Reads the settings back through DBOS's own system-database engine."""
    engine = dbos._sys_db.engine  # read-only check of what is in force
    with engine.connect() as conn:
        journal = conn.exec_driver_sql("PRAGMA journal_mode").scalar()
        sync = conn.exec_driver_sql("PRAGMA synchronous").scalar()
    return {"journal_mode": journal, "synchronous": SYNCHRONOUS_NAMES.get(sync, sync)}


def main() -> None:
    jobs, db_path = int(sys.argv[1]), sys.argv[2]
    dbos = DBOS(config={
        "name": "bench-peers",
        "system_database_url": f"sqlite:///{db_path}",
        "log_level": "WARNING",
    })
    DBOS.launch()
    durability = durability_in_force(dbos)
    print("ready", flush=True)
    if sys.stdin.readline().strip() != "go":
        sys.exit("expected 'go' on stdin")
    started = time.perf_counter()
    handles = [DBOS.start_workflow(cluster_job, i) for i in range(jobs)]
    succeeded = sum(1 for h in handles if h.get_result() == "Succeeded")
    seconds = time.perf_counter() - started
    print(json.dumps({"jobs": jobs, "succeeded": succeeded, "seconds": seconds,
                      **durability}), flush=True)
    sys.stdin.read()
    DBOS.destroy()


if __name__ == "__main__":
    main()
