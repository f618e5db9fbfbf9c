"""Profile (not a benchmark, not a test): where a step of the 5-phase ``sim`` orchestration
spends its statements, transactions, Redis commands and time.

The engine runs in this process (no Celery, no broker): jobs are written the way the API
writes them (``orchestration.jobs.create_job_rows``), then each step goes through
``workers.engine.run_step``, as the worker's task calls it (the last step's transaction
ends the job; each job's completion is checked after). A ``before_cursor_execute``
listener names each statement by the engine function that caused it and the innermost
project function that sent it; a cProfile run of the same
steps gives the time split. The findings are in docs/engine-profile.md.

Needs PostgreSQL and Redis (the machine's, or BENCH_PG / BENCH_REDIS).
Usage: ``python bench/profile_engine.py [--jobs 20] [--top 25]``.
"""

from __future__ import annotations

import argparse
import collections
import cProfile
import os
import pstats
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# A run's names (database, queues, Redis keys); a child process of the run passes its
# own (bench/instructions.py), so both name the same queues.
RUN = os.environ.get("BENCH_RUN") or uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_prof_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
os.environ.update(
    {
        "DATABASE_URL": f"{PG}/{DB}",
        "CELERY_BROKER_URL": f"{REDIS}/0",
        "CELERY_RESULT_BACKEND": f"{REDIS}/1",
        "REDIS_URL": f"{REDIS}/2",
        "BATON_QUEUE_PREFIX": f"prof{RUN}",
        "BATON_REDIS_PREFIX": f"prof{RUN}",
        "BATON_HOME": tempfile.mkdtemp(prefix="baton-prof-"),
    }
)
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402

PHASES = ["a", "b", "c", "d", "e"]
ENGINE_FILES = ("workers/engine", "workers/chat.py", "workers/external.py")


def _site(frame) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    """(engine function, innermost project function) of the statement being sent."""
    inner = ""
    engine_frames: list[str] = []
    while frame is not None:
        path = frame.f_code.co_filename
        if path.startswith(str(ROOT)) and "/.venv/" not in path and "/bench/" not in path:
            rel = os.path.relpath(path, ROOT)
            name = f"{rel}:{frame.f_code.co_name}"
            if not inner and not rel.startswith("models/db.py"):
                inner = name
            if rel.startswith(ENGINE_FILES) and frame.f_code.co_name not in (
                "<lambda>",
                "through_outage",
            ):
                engine_frames.append(name)
        frame = frame.f_back
    # The engine function just below the task's entry point (run_step, finish_job).
    if len(engine_frames) > 1 and engine_frames[-1].endswith(":run_step"):
        engine_frames.pop()
    return (engine_frames[-1] if engine_frames else ""), inner


class Counter:
    def __init__(self, engine: sa.Engine) -> None:
        self.on = False
        self.statements: collections.Counter[tuple[str, str, str]] = collections.Counter()
        self.commits = 0
        self.checkouts = 0
        self.pings = 0
        self.redis: collections.Counter[str] = collections.Counter()
        self.db_seconds = 0.0
        self._started = 0.0

        @sa.event.listens_for(engine, "before_cursor_execute")
        def before(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
            if self.on:
                outer, inner = _site(sys._getframe(1))
                verb = statement.lstrip().split(None, 1)[0].upper()
                self.statements[(outer, inner, verb)] += 1
                self._started = time.perf_counter()

        @sa.event.listens_for(engine, "after_cursor_execute")
        def after(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
            if self.on:
                self.db_seconds += time.perf_counter() - self._started

        @sa.event.listens_for(engine, "commit")
        def commit(conn):  # type: ignore[no-untyped-def]
            if self.on:
                self.commits += 1

        @sa.event.listens_for(engine.pool, "checkout")
        def checkout(*_):  # type: ignore[no-untyped-def]
            if self.on:
                self.checkouts += 1

        ping = engine.dialect.do_ping

        def counted_ping(dbapi_conn):  # type: ignore[no-untyped-def]
            if self.on:
                self.pings += 1
            return ping(dbapi_conn)

        engine.dialect.do_ping = counted_ping  # type: ignore[method-assign]

        original = redis.Redis.execute_command

        def counted(client, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.on:
                self.redis[str(args[0])] += 1
            return original(client, *args, **kwargs)

        redis.Redis.execute_command = counted  # type: ignore[method-assign]

        original_execute = redis.client.Pipeline.execute

        def pipelined(pipe, *args, **kwargs):  # type: ignore[no-untyped-def]
            if self.on:
                self.redis["PIPELINE (one round trip)"] += 1
                for command in pipe.command_stack:
                    self.redis[f"  in a pipeline: {command[0][0]}"] += 1
            return original_execute(pipe, *args, **kwargs)

        redis.client.Pipeline.execute = pipelined  # type: ignore[method-assign]


def make_jobs(sessions, principal, count: int):  # type: ignore[no-untyped-def]
    from models import JobKind
    from models.db import transaction
    from orchestration.jobs import JobSubmission, create_job_rows

    plans = []
    for i in range(count):
        with transaction(sessions) as s:
            job, phases, steps = create_job_rows(
                s,
                principal=principal,
                submission=JobSubmission(
                    kind=JobKind.ORCHESTRATION,
                    title=f"profile {i}",
                    input={"topic": "profiling"},
                    settings={"ai_model": "sim/echo"},
                    custom_phases=PHASES,
                ),
            )
            order = {p.id: p.position for p in phases}
            plans.append(
                (job.id, [s_.id for s_ in sorted(steps, key=lambda s_: order[s_.phase_id])])
            )
    return plans


def run_jobs(sessions, plans) -> None:  # type: ignore[no-untyped-def]
    from workers import engine

    for job_id, step_ids in plans:
        for step_id in step_ids:
            # As the worker's task gets it: the chain's first link says it starts the job.
            outcome = engine.run_step(
                sessions, job_id=job_id, step_id=step_id, starts_job=step_id == step_ids[0]
            )
            if outcome is not engine.Outcome.CONTINUE:
                raise SystemExit(f"step {step_id} ended {outcome}")

    from models import Job, JobStatus
    from models.db import transaction

    with transaction(sessions) as session:  # the last step's transaction ended each job
        statuses = session.execute(
            sa.select(Job.status).where(Job.id.in_([job_id for job_id, _ in plans]))
        ).scalars()
        if any(status != JobStatus.COMPLETED.value for status in statuses):
            raise SystemExit("a job did not complete")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--top", type=int, default=25)
    parser.add_argument("--stats", help="also write the cProfile stats to this file (pstats)")
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from baseline import bench_principal

        from models.db import session_factory
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        sessions = session_factory()
        counter = Counter(sessions.kw["bind"])
        principal = bench_principal(sessions, f"prof-{RUN}")
        run_jobs(sessions, make_jobs(sessions, principal, 2))  # warm-up: imports, caches, pool

        plans = make_jobs(sessions, principal, args.jobs)
        steps = sum(len(s) for _, s in plans)
        counter.on = True
        started = time.perf_counter()
        run_jobs(sessions, plans)
        wall = time.perf_counter() - started
        counter.on = False

        total = sum(counter.statements.values())
        print(f"# {args.jobs} jobs x {len(PHASES)} one-step phases = {steps} steps")
        print(
            f"per step: {total / steps:.1f} statements, {counter.commits / steps:.2f} commits, "
            f"{counter.checkouts / steps:.2f} pool checkouts, {counter.pings / steps:.2f} pings, "
            f"{sum(n for c, n in counter.redis.items() if not c.startswith(' ')) / steps:.1f} "
            "Redis round trips"
        )
        print(
            f"per step: {wall / steps * 1000:.2f} ms wall, of which "
            f"{counter.db_seconds / steps * 1000:.2f} ms waiting on statements"
        )
        print("\n# statements per step, by engine function -> sender (verb)")
        for (outer, inner, verb), n in sorted(counter.statements.items(), key=lambda kv: -kv[1]):
            print(f"{n / steps:6.2f}  {outer or '-'} -> {inner} ({verb})")
        print("\n# Redis commands per step")
        for command, n in counter.redis.most_common():
            print(f"{n / steps:6.2f}  {command}")

        plans = make_jobs(sessions, principal, args.jobs)
        profile = cProfile.Profile()
        profile.enable()
        run_jobs(sessions, plans)
        profile.disable()
        if args.stats:
            profile.dump_stats(args.stats)
        print(f"\n# cProfile of the same {steps} steps, top {args.top} by cumulative time")
        stats = pstats.Stats(profile, stream=sys.stdout)
        stats.sort_stats("cumulative").print_stats(args.top)
        print(f"\n# project functions only, top {args.top} by cumulative time")
        stats.sort_stats("cumulative").print_stats(
            r"^(?!.*\.venv).*/(workers|orchestration|models)/", args.top
        )
    finally:
        from models.db import get_engine

        get_engine.cache_clear()
        drop_database(PG, DB)
        drop_run_keys()
        client = redis.Redis.from_url(f"{REDIS}/2")
        keys = list(client.scan_iter(match=f"prof{RUN}:*"))
        if keys:
            client.delete(*keys)


if __name__ == "__main__":
    main()
