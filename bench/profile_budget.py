"""Profile (not a test): where one budget reserve+settle pair's time goes, in one process.

Creates a scratch database with one organization and one ``block`` limit, then runs the
pair ``bench/bench_budget.py`` times (``budget.reserve`` in one transaction, then
``budget.settle`` in another; ``--scope`` settles with the call's scope, as the workers
do). Prints the SQL statements and commits per pair (a SQLAlchemy ``before_cursor_execute``
counter, grouped by statement), the wall time per pair, and the top of a cProfile.
Usage: ``python bench/profile_budget.py [--pairs 2000] [--top 25] [--scope]``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import re
import time
import uuid
from decimal import Decimal

PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_profile_budget_{uuid.uuid4().hex[:8]}"
os.environ.setdefault("BATON_HOME", f"/tmp/{DB}")
os.environ["DATABASE_URL"] = f"{PG}/{DB}"

import sqlalchemy as sa  # noqa: E402
from scratch import create_database, drop_database  # noqa: E402


def _shape(statement: str) -> str:
    return re.sub(r"\s+", " ", statement).strip()[:110]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", help="a pstats sort key (tottime, ...)")
    parser.add_argument("--scope", action="store_true", help="settle with the call's scope")
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from baseline import bench_limit

        from models.db import transaction
        from models.migrate import upgrade
        from orchestration import budget

        upgrade(os.environ["DATABASE_URL"])
        engine = sa.create_engine(os.environ["DATABASE_URL"], pool_size=1)
        factory = sa.orm.sessionmaker(bind=engine, expire_on_commit=False)
        org_id, _ = bench_limit(factory)
        scope = budget.CallScope(org_id)
        amount = Decimal("0.0000420000")

        def pair(i: int) -> None:
            key = f"profile:{i}"
            with transaction(factory) as s:
                budget.reserve(
                    s, scope=scope, call_key=key, amount=amount, job_id=None, hold_seconds=600
                )
            with transaction(factory) as s:
                budget.settle(s, call_key=key, actual=amount, scope=scope if args.scope else None)

        for i in range(50):  # warm-up: statement caches, pool, imports
            pair(-i - 1)

        statements: collections.Counter[str] = collections.Counter()
        commits = 0

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _count(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
            statements[_shape(statement)] += 1

        @sa.event.listens_for(engine, "commit")
        def _commit(_conn) -> None:  # type: ignore[no-untyped-def]
            nonlocal commits
            commits += 1

        started, cpu = time.perf_counter(), time.process_time()
        for i in range(args.pairs):
            pair(i)
        wall = (time.perf_counter() - started) / args.pairs
        cpu = (time.process_time() - cpu) / args.pairs

        sa.event.remove(engine, "before_cursor_execute", _count)
        sa.event.remove(engine, "commit", _commit)
        profile = cProfile.Profile()
        profile.enable()
        for i in range(args.pairs):
            pair(args.pairs + i)
        profile.disable()

        total = sum(statements.values())
        print(
            f"per pair: {total / args.pairs:.2f} statements, {commits / args.pairs:.2f} commits, "
            f"{wall * 1000:.2f} ms wall, {cpu * 1000:.2f} ms of this process's CPU (one process)"
        )
        for shape, count in statements.most_common():
            print(f"  {count / args.pairs:5.2f}  {shape}")
        out = io.StringIO()
        stats = pstats.Stats(profile, stream=out)
        stats.sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        engine.dispose()
    finally:
        drop_database(PG, DB)


if __name__ == "__main__":
    main()
