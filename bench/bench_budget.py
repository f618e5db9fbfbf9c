"""Benchmark (not a test): budget reservations + settlements per second on ONE hot limit.

Eight processes (as workers are), each with its own PostgreSQL connection, for a fixed time:
- baseline: a raw single-row conditional UPDATE per transaction (the physical limit:
  every update waits for the previous commit on the same row);
- Baton: ``budget.reserve`` in one transaction then ``budget.settle`` in another, the
  same calls a worker makes around a provider call.
Prints both rates (medians of alternating rounds) and their ratio.
Usage: ``python bench/bench_budget.py [--seconds 5] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import statistics
import time
import uuid
from decimal import Decimal

import sqlalchemy as sa
from scratch import create_database, drop_database

PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_budget_{uuid.uuid4().hex[:8]}"
os.environ.setdefault("BATON_HOME", f"/tmp/{DB}")
os.environ["DATABASE_URL"] = f"{PG}/{DB}"


def _loop(args: tuple[str, int, float, str, str, str]) -> int:
    """One process with its own connection: run ``kind`` until ``seconds`` pass."""
    kind, index, seconds, window_id, org_id, _ = args
    from models.db import transaction
    from orchestration import budget

    engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=1)
    factory = sa.orm.sessionmaker(bind=engine, expire_on_commit=False)
    amount = Decimal("0.0000420000")
    raw_sql = sa.text(
        "UPDATE budget_windows SET reserved = reserved + :a WHERE id = :w AND spent + reserved + :a <= :limit"
    )
    scope = budget.CallScope(uuid.UUID(org_id))
    done = 0
    stop = time.monotonic() + seconds
    with engine.connect() as conn:
        while time.monotonic() < stop:
            if kind == "raw":
                with conn.begin():
                    conn.execute(
                        raw_sql, {"a": amount, "w": window_id, "limit": Decimal("1000000")}
                    )
            else:
                key = f"bench:{index}:{done}"
                with transaction(factory) as s:
                    budget.reserve(
                        s, scope=scope, call_key=key, amount=amount, job_id=None, hold_seconds=600
                    )
                with transaction(factory) as s:
                    budget.settle(s, call_key=key, actual=amount)
            done += 1
    engine.dispose()
    return done


def run_processes(kind: str, count: int, seconds: float, window_id: str, org_id: str) -> float:
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(count) as pool:
        counts = pool.map(_loop, [(kind, i, seconds, window_id, org_id, "") for i in range(count)])
    return sum(counts) / seconds


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from baseline import bench_limit

        from models.db import transaction
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        engine = sa.create_engine(os.environ["DATABASE_URL"])
        factory = sa.orm.sessionmaker(bind=engine, expire_on_commit=False)
        org_id, window_id = bench_limit(factory)

        run_processes("raw", args.threads, 1.0, str(window_id), str(org_id))  # warm-up
        # Alternating rounds: load from elsewhere on the machine falls on both sides.
        raws, pairs_runs = [], []
        for _ in range(args.rounds):
            raws.append(
                run_processes("raw", args.threads, args.seconds, str(window_id), str(org_id))
            )
            pairs_runs.append(
                run_processes("baton", args.threads, args.seconds, str(window_id), str(org_id))
            )
        raw, pairs = statistics.median(raws), statistics.median(pairs_runs)
        with transaction(factory) as s:
            held = s.scalar(
                sa.text("SELECT count(*) FROM budget_reservations WHERE status = 'held'")
            )
        print(f"raw conditional UPDATEs/s (1 row, {args.threads} conns): {raw:9.1f}")
        print(f"baton reserve+settle pairs/s (1 limit, {args.threads} conns): {pairs:9.1f}")
        print(f"ratio: {pairs / raw:.2f} of the physical limit (each pair is two transactions)")
        print(
            f"  median of {args.rounds} alternating rounds of {args.seconds:g} s; raw "
            + " ".join(f"{x:.0f}" for x in raws)
            + " / baton "
            + " ".join(f"{x:.0f}" for x in pairs_runs)
        )
        assert held == 0
        engine.dispose()
    finally:
        drop_database(PG, DB)


if __name__ == "__main__":
    main()
