"""Profile (not a test): where one budget reserve+settle pair's time goes, in one process.

Creates a scratch database with one organization and one ``block`` limit, then runs the
pair ``bench/bench_budget.py`` times (``budget.reserve`` in one transaction, then
``budget.settle`` in another; ``--scope`` settles with the call's scope, as the workers
do). Prints the SQL statements and commits per pair (a SQLAlchemy ``before_cursor_execute``
counter, grouped by statement), the wall time per pair, the CPU of this process and of
its PostgreSQL backend (read from /proc when the server is local) per pair, and the top
of a cProfile.
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


def _backend_cpu(pid: int) -> float | None:
    """Seconds of CPU the PostgreSQL backend ``pid`` has used (user + system), when the
    server runs on this machine; the server's share of a pair on a CPU-bound machine."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


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

        with engine.connect() as conn:  # pool_size=1: the connection every pair uses
            backend = conn.exec_driver_sql("SELECT pg_backend_pid()").scalar()
        statements: collections.Counter[str] = collections.Counter()
        commits = 0

        @sa.event.listens_for(engine, "before_cursor_execute")
        def _count(_conn, _cursor, statement, _params, _context, _many) -> None:  # type: ignore[no-untyped-def]
            statements[_shape(statement)] += 1

        @sa.event.listens_for(engine, "commit")
        def _commit(_conn) -> None:  # type: ignore[no-untyped-def]
            nonlocal commits
            commits += 1

        server = _backend_cpu(backend)
        started, cpu = time.perf_counter(), time.process_time()
        for i in range(args.pairs):
            pair(i)
        wall = (time.perf_counter() - started) / args.pairs
        cpu = (time.process_time() - cpu) / args.pairs
        after = _backend_cpu(backend)
        server_text = (
            f", {(after - server) / args.pairs * 1000:.2f} ms of its backend's"
            if server is not None and after is not None
            else ""
        )

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
            f"{wall * 1000:.2f} ms wall, {cpu * 1000:.2f} ms of this process's CPU{server_text} "
            "(one process)"
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
