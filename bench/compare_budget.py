"""Benchmark (not a test): bench_budget.py's two rates for two checkouts, in one run.

Rounds of: the raw conditional UPDATE, reserve+settle pairs on the ``--before`` checkout's
code, and pairs on this checkout's code, in a rotating order, all on one database with
one hot limit (8 processes each, as bench/bench_budget.py). On a shared machine whose
load moves the raw rate by 3x within minutes, the per-round after/before figure is the
steadier one.
Usage: ``python bench/compare_budget.py --before /path/to/a/worktree/of/main
[--rounds 6] [--seconds 4]`` (both checkouts must share this database schema).
"""

import argparse
import os
import statistics
import subprocess
import sys
import uuid

import sqlalchemy as sa
from scratch import create_database, drop_database

PG = "postgresql+psycopg2://postgres@127.0.0.1:5432"
DB = f"baton_abx_{uuid.uuid4().hex[:8]}"
URL = f"{PG}/{DB}"
os.environ["DATABASE_URL"] = URL
os.environ.setdefault("BATON_HOME", f"/tmp/{DB}")
AFTER = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def run(kind, tree, seconds, wid, org):
    code = (
        "import os, sys; sys.path.insert(0, 'bench'); import bench_budget as bb; "
        f"os.environ['DATABASE_URL'] = {URL!r}; "
        f"print(bb.run_processes({kind!r}, 8, {seconds}, {wid!r}, {org!r}))"
    )
    out = subprocess.run(
        [PY, "-c", code],
        cwd=tree,
        env={**os.environ, "PYTHONPATH": tree},
        capture_output=True,
        text=True,
    )
    if out.returncode:
        print(out.stderr[-2000:])
        raise SystemExit(1)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "--before", required=True, help="another checkout (e.g. a worktree of main)"
    )
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--seconds", type=float, default=4.0)
    args = parser.parse_args()
    create_database(PG, DB)
    try:
        from baseline import bench_limit

        from models.db import transaction
        from models.migrate import upgrade

        upgrade(URL)
        engine = sa.create_engine(URL)
        f = sa.orm.sessionmaker(bind=engine, expire_on_commit=False)
        org_id, window_id = bench_limit(f)
        wid, org = str(window_id), str(org_id)
        BEFORE, rounds, secs = os.path.abspath(args.before), args.rounds, args.seconds
        run("raw", AFTER, 1, wid, org)
        res = {"raw": [], "before": [], "after": []}
        order = [("raw", "raw", AFTER), ("before", "baton", BEFORE), ("after", "baton", AFTER)]
        for r in range(rounds):
            seq = order[r % 3 :] + order[: r % 3]
            got = {name: run(kind, tree, secs, wid, org) for name, kind, tree in seq}
            for k, v in got.items():
                res[k].append(v)
            print(
                f"round {r + 1}: raw {got['raw']:.0f}/s  before {got['before']:.0f} pairs/s ({got['before'] / got['raw']:.2f})  after {got['after']:.0f} pairs/s ({got['after'] / got['raw']:.2f})",
                flush=True,
            )
        raw = statistics.median(res["raw"])
        rb = [b / r for b, r in zip(res["before"], res["raw"], strict=True)]
        ra = [a / r for a, r in zip(res["after"], res["raw"], strict=True)]
        print(
            f"medians: raw {raw:.0f}/s, before {statistics.median(res['before']):.0f} pairs/s (ratio of medians {statistics.median(res['before']) / raw:.2f}, median per-round ratio {statistics.median(rb):.2f}), after {statistics.median(res['after']):.0f} pairs/s (ratio of medians {statistics.median(res['after']) / raw:.2f}, median per-round ratio {statistics.median(ra):.2f}); after/before pairs per round: median {statistics.median([a / b for a, b in zip(res['after'], res['before'], strict=True)]):.2f}"
        )
        with transaction(f) as s:
            held = s.scalar(
                sa.text("SELECT count(*) FROM budget_reservations WHERE status = 'held'")
            )
            w = s.execute(sa.text("SELECT spent, reserved FROM budget_windows")).all()
        print("held after the run:", held, "windows:", w)
    finally:
        drop_database(PG, DB)


if __name__ == "__main__":
    main()
