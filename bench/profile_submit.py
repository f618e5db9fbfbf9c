"""Profile (not a test): where one job submission's time goes, in process.

Creates a scratch database, registers a user and POSTs ``/api/v1/orchestrate`` through
Flask's test client. Prints the SQL statements per submission (a SQLAlchemy
``before_cursor_execute`` counter, grouped by statement), the Redis commands per
submission, and the top of a cProfile by cumulative time.
Usage: ``python bench/profile_submit.py [--requests 200] [--top 25]``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import io
import os
import pstats
import re
import sys
import tempfile
import uuid
from pathlib import Path

# A run's names (database, queues, Redis keys); a child process of the run passes its
# own (bench/instructions.py), so both name the same queues.
RUN = os.environ.get("BENCH_RUN") or uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_profile_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
os.environ.update(
    DATABASE_URL=f"{PG}/{DB}",
    CELERY_BROKER_URL=f"{REDIS}/0",
    CELERY_RESULT_BACKEND=f"{REDIS}/1",
    REDIS_URL=f"{REDIS}/2",
    BATON_QUEUE_PREFIX=f"prof{RUN}",
    BATON_REDIS_PREFIX=f"prof{RUN}",
    BATON_HOME=tempfile.mkdtemp(prefix="baton-prof-"),
    BATON_API_RATE_LIMIT="1000000 per minute",
)
# This tree's code first (not the venv's editable install, which may be another tree's):
# a worktree's copy measures that worktree.
sys.path[:0] = [str(Path(__file__).resolve().parent.parent)]

import sqlalchemy as sa  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402


def _shape(statement: str) -> str:
    text = re.sub(r"\s+", " ", statement).strip()
    return text[:110]


# The submission every in-process submission bench sends: 5 custom phases on sim/echo.
BODY = {
    "topic": "benchmark",
    "custom_phases": ["a", "b", "c", "d", "e"],
    "settings": {"ai_model": "sim/echo"},
}


def drop_scratch() -> None:
    """Drop the scratch database and what the run left in Redis (its queues, with the
    submissions' messages no worker reads), even after a failed run."""
    drop_database(PG, DB)
    drop_run_keys()


def registered_client():  # type: ignore[no-untyped-def]
    """Baton's app (on the scratch database, migrated), its test client, and the headers
    of a freshly registered admin: what bench/cpu_submit.py also submits through."""
    from api import create_app

    app = create_app()
    client = app.test_client()
    reg = client.post(
        "/api/v1/auth/register",
        json={
            "email": f"prof-{RUN}@example.com",
            "password": "profile-password",
            "organization_name": "Profile",
        },
    )
    assert reg.status_code == 201, reg.get_json()
    return app, client, {"Authorization": f"Bearer {reg.get_json()['access_token']}"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--sort", default="cumulative", help="a pstats sort key (tottime, ...)")
    parser.add_argument("--idempotency", action="store_true", help="send an Idempotency-Key")
    parser.add_argument("--dump", help="also write the raw cProfile stats to this file")
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        import redis
        from redis.client import Redis

        app, client, headers = registered_client()

        def post(i: int) -> None:
            extra = {"Idempotency-Key": f"k-{RUN}-{i}"} if args.idempotency else {}
            response = client.post("/api/v1/orchestrate", json=BODY, headers={**headers, **extra})
            assert response.status_code == 202, response.get_json()

        for i in range(20):  # warm-up: imports, pools, script caches
            post(-1 - i)
        import time

        engine = app.extensions["baton.sessions"].kw["bind"]
        waits = {"sql": 0.0}

        def _before(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            context._profile_started = time.perf_counter()

        def _after(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            waits["sql"] += time.perf_counter() - context._profile_started

        sa.event.listen(engine, "before_cursor_execute", _before)
        sa.event.listen(engine, "after_cursor_execute", _after)
        start = time.perf_counter()
        for i in range(args.requests):
            post(10**6 + i)
        plain = time.perf_counter() - start
        sa.event.remove(engine, "before_cursor_execute", _before)
        sa.event.remove(engine, "after_cursor_execute", _after)
        per = 1000 / args.requests
        print(
            f"in process, not profiled: {plain * per:.2f} ms per submission, of which "
            f"{waits['sql'] * per:.2f} ms in SQL statements (cursor.execute, wall)"
        )

        statements: collections.Counter[str] = collections.Counter()
        transactions = collections.Counter[str]()

        def count(conn, cursor, statement, parameters, context, executemany):  # noqa: ANN001
            statements[_shape(statement)] += 1

        def count_begin(conn):  # noqa: ANN001
            transactions["BEGIN"] += 1

        sa.event.listen(engine, "before_cursor_execute", count)
        sa.event.listen(engine, "begin", count_begin)
        redis_commands: collections.Counter[str] = collections.Counter()
        original = Redis.execute_command

        seen_where: dict[str, str] = {}

        def counting(self, *a, **kw):  # noqa: ANN001
            redis_commands[str(a[0])] += 1
            if str(a[0]) not in seen_where:
                import traceback

                frames = [
                    f"{f.filename.split('site-packages/')[-1]}:{f.lineno}"
                    for f in traceback.extract_stack()[-9:-1]
                    if "redis/" not in f.filename
                ]
                seen_where[str(a[0])] = " < ".join(reversed(frames[-3:]))
            return original(self, *a, **kw)

        Redis.execute_command = counting  # type: ignore[method-assign]
        original_pipe = redis.client.Pipeline.execute

        def counting_pipe(self, *a, **kw):  # noqa: ANN001
            redis_commands[f"PIPELINE({len(self.command_stack)})"] += 1
            return original_pipe(self, *a, **kw)

        redis.client.Pipeline.execute = counting_pipe  # type: ignore[method-assign]
        n = args.requests
        profiler = cProfile.Profile()

        start = time.perf_counter()
        profiler.enable()
        for i in range(n):
            post(i)
        profiler.disable()
        elapsed = time.perf_counter() - start
        Redis.execute_command = original  # type: ignore[method-assign]
        redis.client.Pipeline.execute = original_pipe  # type: ignore[method-assign]
        sa.event.remove(engine, "before_cursor_execute", count)
        sa.event.remove(engine, "begin", count_begin)

        total = sum(statements.values())
        print(f"{n} submissions in {elapsed:.2f} s ({n / elapsed:.0f}/s in process, profiled)")
        print(f"SQL statements per submission: {total / n:.2f}")
        print(f"transactions per submission:   {transactions['BEGIN'] / n:.2f}")
        for shape, c in statements.most_common():
            print(f"  {c / n:5.2f}  {shape}")
        print(f"Redis round trips per submission: {sum(redis_commands.values()) / n:.2f}")
        for name, c in redis_commands.most_common():
            print(f"  {c / n:5.2f}  {name}  ({seen_where.get(name, 'pipeline')})")
        if args.dump:
            profiler.dump_stats(args.dump)
        out = io.StringIO()
        pstats.Stats(profiler, stream=out).sort_stats(args.sort).print_stats(args.top)
        print(out.getvalue())
        engine.dispose()
    finally:
        drop_scratch()


if __name__ == "__main__":
    main()
