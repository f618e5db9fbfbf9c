"""Benchmark (not a test): does the engine scale with worker processes, and does a
worker's memory stay flat?

1. Throughput of single-step ``sim`` task jobs with 1, 2 and 4 worker processes of
   ``-c 2``, each started and answering a ping before the jobs are sent (written and
   sent as the API does). ``--model sim/echo`` (the default) answers at once, so the
   engine's own CPU is all there is to share; ``sim/slow`` takes ~1 s a call, as real
   providers do, so the workers wait on the network as in production. The figure is the
   batch's jobs over its makespan, from the first ``started_at`` to the last
   ``finished_at``; the 1-process figure, measured in the same run, is the baseline of
   the ratios.
2. One worker process (``-c 2``, child recycling off, so a leak would show): the RSS of
   the worker and its children at start (after 20 warm-up jobs), after 1,000 jobs and
   after ``--rss-jobs`` (10,000 by default; 0 skips this part).

Needs PostgreSQL and Redis (the machine's, or BENCH_PG / BENCH_REDIS). On a machine with
fewer cores than processes, the figures show the cores, not the engine.
Usage: ``python bench/bench_scale.py [--jobs 300] [--processes 1,2,4] [--rss-jobs 10000]
[--model sim/echo]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_scale_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
os.environ.update(
    {
        "DATABASE_URL": f"{PG}/{DB}",
        "CELERY_BROKER_URL": f"{REDIS}/0",
        "CELERY_RESULT_BACKEND": f"{REDIS}/1",
        "REDIS_URL": f"{REDIS}/2",
        "BATON_QUEUE_PREFIX": f"scale{RUN}",
        "BATON_REDIS_PREFIX": f"scale{RUN}",
        "BENCH_BASELINE_QUEUE": f"scale{RUN}.baseline",
        "BATON_HOME": tempfile.mkdtemp(prefix="baton-scale-"),
        "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
    }
)
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

import sqlalchemy as sa  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402


def send_jobs(sessions, principal, count: int, model: str = "sim/echo") -> None:  # type: ignore[no-untyped-def]
    """``count`` one-step task jobs on ``model``, written and sent as the API does."""
    from models import JobKind
    from models.db import transaction
    from orchestration import canvas
    from orchestration.jobs import JobSubmission, create_job_rows

    for i in range(count):
        with transaction(sessions) as s:
            job, phases, steps = create_job_rows(
                s,
                principal=principal,
                submission=JobSubmission(
                    kind=JobKind.TASK,
                    title=f"scale {i}",
                    input={"title": f"scale {i}", "description": "one step"},
                    settings={"ai_model": model},
                ),
            )
        canvas.enqueue(job, phases, steps)


def wait_finished(engine: sa.Engine, total: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with engine.connect() as conn:
            done, failed = conn.execute(
                sa.text(
                    "SELECT count(*) FILTER (WHERE status IN ('completed', 'failed', 'cancelled')),"
                    " count(*) FILTER (WHERE status <> 'completed' AND finished_at IS NOT NULL)"
                    " FROM jobs"
                )
            ).one()
        if failed:
            raise SystemExit(f"{failed} jobs did not complete")
        if done >= total:
            return
        time.sleep(0.2)
    raise SystemExit(f"only {done} of {total} jobs finished in {timeout:.0f} s")


def wait_ready(names: list[str], timeout: float = 120) -> None:
    """Until every named worker answers a ping (``%h`` is this host's name)."""
    from baseline import celery_app

    wanted = {name.replace("%h", socket.gethostname()) for name in names}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        answered = {name for reply in celery_app.control.ping(timeout=0.5) for name in reply}
        if wanted <= answered:
            return
    raise SystemExit(f"workers not ready in {timeout:.0f} s: {sorted(wanted - answered)}")


def rss_kib(pid: int) -> int:
    """The RSS of ``pid`` and its children (the prefork pool), in KiB."""
    total = 0
    pids = [pid]
    children = Path(f"/proc/{pid}/task/{pid}/children")
    if children.exists():
        pids += [int(p) for p in children.read_text().split()]
    for p in pids:
        for line in Path(f"/proc/{p}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total += int(line.split()[1])
    return total


def stop(procs: list[subprocess.Popen]) -> None:
    from baseline import stop_processes

    stop_processes(procs, timeout=30)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=300, help="jobs per process count")
    parser.add_argument("--processes", default="1,2,4")
    parser.add_argument("--rss-jobs", type=int, default=10_000)
    parser.add_argument("--model", default="sim/echo", help="sim/echo (no latency) or sim/slow")
    args = parser.parse_args()

    create_database(PG, DB)
    procs: list[subprocess.Popen] = []
    try:
        from baseline import bench_principal, celery_worker

        from models.db import session_factory
        from models.migrate import upgrade
        from orchestration.canvas import all_queues

        upgrade(os.environ["DATABASE_URL"])
        sessions = session_factory()
        engine = sessions.kw["bind"]
        principal = bench_principal(sessions, f"scale-{RUN}")
        finished = 0

        # -- 1. throughput by process count ------------------------------------------------
        rates: dict[int, float] = {}
        for count in [int(n) for n in args.processes.split(",")]:
            # All the workers up before the jobs go: a late starter would count as slowness.
            names = [f"scale{count}x{i}-{RUN}@%h" for i in range(count)]
            procs += [celery_worker("workers", all_queues(), extra=["-n", n]) for n in names]
            wait_ready(names)
            with engine.connect() as conn:
                sent_after = conn.scalar(sa.text("SELECT clock_timestamp()"))
            send_jobs(sessions, principal, args.jobs, args.model)
            wait_finished(engine, finished + args.jobs, timeout=60 + args.jobs * 2)
            # From the first step claimed to the last job finished: the batch's makespan
            # (a job's end can wait behind queued steps, so finish times alone bunch up).
            with engine.connect() as conn:
                first, last = conn.execute(
                    sa.text(
                        "SELECT min(started_at), max(finished_at) FROM jobs "
                        "WHERE created_at >= :after"
                    ),
                    {"after": sent_after},
                ).one()
            stop(procs)
            finished += args.jobs
            rates[count] = args.jobs / (last - first).total_seconds()
        one = rates[min(rates)]
        for count, rate in rates.items():
            print(
                f"processes {count} (-c 2)   {rate:8.1f} jobs/s   "
                f"ratio to {min(rates)} process {rate / one:.2f}x   (n={args.jobs}, {args.model})"
            )
        if not args.rss_jobs:
            return

        # -- 2. one worker's memory over --rss-jobs jobs -----------------------------------
        # Child recycling (worker_max_tasks_per_child) off: a leak must show, not be reset.
        worker = celery_worker("workers", all_queues(), extra=["--max-tasks-per-child=100000000"])
        procs.append(worker)
        send_jobs(sessions, principal, 20)
        wait_finished(engine, finished + 20, timeout=120)
        finished += 20
        marks = [("start (after 20 jobs)", rss_kib(worker.pid))]
        checkpoints = sorted({min(1000, args.rss_jobs), args.rss_jobs})
        sent = 0
        for mark in checkpoints:
            while sent < mark:  # batches keep the queue short and the sender's memory low
                batch = min(500, mark - sent)
                send_jobs(sessions, principal, batch)
                sent += batch
                wait_finished(engine, finished + sent, timeout=120 + batch)
            marks.append((f"after {mark} jobs", rss_kib(worker.pid)))
        for label, kib in marks:
            print(f"worker RSS {label:>22}: {kib / 1024:8.1f} MiB (worker + 2 children)")
        print(f"growth start -> end: {(marks[-1][1] - marks[0][1]) / 1024:+.1f} MiB")
    finally:
        stop(procs)
        from models.db import get_engine

        get_engine.cache_clear()
        drop_database(PG, DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
