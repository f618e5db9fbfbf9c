"""Benchmark (not a test): the job engine against the stack's own limits, in one run.

1. Job submissions per second through Baton's API under gunicorn, beside a bare Flask
   route (same gunicorn settings) that inserts one row and sends one Celery task.
2. Per-phase overhead of a 5-phase orchestration on the ``sim`` provider at zero latency,
   beside a raw Celery chain of 5 no-op tasks, both on one worker process. Two Baton
   figures: end to end (the HTTP submission and the wait for the job's end on its live
   channel included) and the engine's own, from the job's rows (``created_at`` to
   ``finished_at``), which leaves out what the raw chain does not do (an HTTP request).
   Measured in ``--pairs`` pairs of a raw block and a Baton block, one after the other;
   the ratios are the medians of the pairs' own.

Needs PostgreSQL and Redis (the machine's, or DATABASE_URL / CELERY_BROKER_URL set).
Prints the figures and their ratios. Usage:
``python bench/bench_engine.py [--requests N] [--chains N] [--pairs N]``.
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
# The API's port (the bare route's is the next one; trace_engine.py uses +10). Two runs at
# once on one machine need different ones: gunicorn() refuses a port already taken, or its
# requests would go to the other run's server and database.
PORT = int(os.environ.get("BENCH_PORT", "18101"))
ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB}",
    "CELERY_BROKER_URL": f"{REDIS}/0",
    "CELERY_RESULT_BACKEND": f"{REDIS}/1",
    "REDIS_URL": f"{REDIS}/2",
    "BATON_QUEUE_PREFIX": f"bench{RUN}",
    # Its own rate-limit counters: runs one after another register from one address.
    "BATON_REDIS_PREFIX": f"bench{RUN}",
    "BENCH_BASELINE_QUEUE": f"bench{RUN}.baseline",
    "BATON_HOME": tempfile.mkdtemp(prefix="baton-bench-"),
    "BATON_API_RATE_LIMIT": "1000000 per minute",
    "PYTHONPATH": f"{ROOT}:{ROOT / 'bench'}",
}
os.environ.update(ENV)

import httpx  # noqa: E402
import redis  # noqa: E402
import sqlalchemy as sa  # noqa: E402
from baseline import stop_processes  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402


def sh(cmd: list[str], **kw) -> subprocess.Popen:  # type: ignore[no-untyped-def]
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw
    )


def gunicorn(app: str, port: int) -> subprocess.Popen:
    with socket.socket() as probe:
        if probe.connect_ex(("127.0.0.1", port)) == 0:
            raise SystemExit(f"port {port} is taken (another run?): set BENCH_PORT")
    proc = sh(
        [
            sys.executable,
            "-m",
            "gunicorn",
            "-b",
            f"127.0.0.1:{port}",
            "-w",
            "2",
            "--threads",
            "4",
            app,
        ]
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/", timeout=1)
            return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    raise SystemExit(f"{app} did not start")


def hammer(url: str, body: dict, headers: dict, total: int, concurrency: int = 8) -> float:
    """Requests per second for ``total`` POSTs from ``concurrency`` client threads."""
    counter = iter(range(total))
    lock = threading.Lock()
    failures: list[int] = []

    def work() -> None:
        with httpx.Client(timeout=30) as client:
            while True:
                with lock:
                    if next(counter, None) is None:
                        return
                response = client.post(url, json=body, headers=headers)
                if response.status_code != 202:
                    failures.append(response.status_code)

    threads = [threading.Thread(target=work) for _ in range(concurrency)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - start
    if failures:
        raise SystemExit(f"{len(failures)} failed requests to {url}: {failures[:5]}")
    return total / elapsed


TERMINAL = ("completed", "failed", "cancelled")


def wait_for_end(engine: sa.Engine, live, job_id: str):  # type: ignore[no-untyped-def]
    """(status, created_at, finished_at) of the job once it has ended, followed as a client
    follows it: its live channel (pub/sub), the row read when a terminal event arrives
    (and every 100 ms in case it ended before the subscription). Waiting costs no CPU, as
    the raw chain's ``.get()`` waits on the result backend's pub/sub: a polling loop would
    take CPU from the worker on a 2-core machine and slow what it measures."""
    from orchestration.redis_store import job_channel

    live.subscribe(job_channel(job_id))
    try:
        while True:
            with engine.connect() as conn:
                status, created, finished = conn.execute(
                    sa.text("SELECT status, created_at, finished_at FROM jobs WHERE id = :id"),
                    {"id": job_id},
                ).one()
            if status in TERMINAL:
                return status, created, finished
            deadline = time.monotonic() + 0.1
            while (left := deadline - time.monotonic()) > 0:
                message = live.get_message(timeout=left)
                if message and any(f'"job.{end}"'.encode() in message["data"] for end in TERMINAL):
                    break
    finally:
        live.unsubscribe()


def raw_block(chains: int, procs: list[subprocess.Popen]) -> list[float]:
    """Seconds for each raw Celery chain of 5 no-op tasks on one worker process of its own
    (started for the block, stopped after; the first 3 runs warm up)."""
    from baseline import celery_worker, noop
    from celery import chain

    worker = celery_worker("baseline", [ENV["BENCH_BASELINE_QUEUE"]])
    procs.append(worker)
    try:
        time.sleep(3)
        raw = []
        for _ in range(chains + 3):
            start = time.perf_counter()
            chain(
                *[noop.si().set(queue=ENV["BENCH_BASELINE_QUEUE"]) for _ in range(5)]
            ).apply_async().get(timeout=30)
            raw.append(time.perf_counter() - start)
        return raw[3:]
    finally:
        stop_processes(procs)


def baton_block(chains, procs, engine, live, body, headers):  # type: ignore[no-untyped-def]
    """(seconds end to end, seconds by the job's rows) for each 5-phase orchestration on
    one Baton worker process and the API (started for the block, stopped after; the first
    3 runs warm up)."""
    from baseline import celery_worker

    from orchestration.canvas import all_queues

    procs.append(celery_worker("workers", all_queues()))
    procs.append(gunicorn("api:create_app()", PORT))
    try:
        time.sleep(3)
        runs, engine_runs = [], []
        with httpx.Client(base_url=f"http://127.0.0.1:{PORT}", timeout=30) as client:
            for _ in range(chains + 3):
                start = time.perf_counter()
                accepted = client.post("/api/v1/orchestrate", json=body, headers=headers).json()
                job_id = accepted["id"]
                status, created, finished = wait_for_end(engine, live, job_id)
                if status != "completed":
                    raise SystemExit(f"orchestration {job_id} ended {status}")
                runs.append(time.perf_counter() - start)
                # The engine alone, from its own rows: the job written (before its commit
                # and send, as the raw chain's clock starts before its send) to the job
                # finished; without the HTTP request and this loop's polling.
                engine_runs.append((finished - created).total_seconds())
        return runs[3:], engine_runs[3:]
    finally:
        stop_processes(procs)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--chains", type=int, default=30, help="runs a block")
    parser.add_argument("--pairs", type=int, default=3, help="raw and Baton blocks")
    args = parser.parse_args()

    create_database(PG, DB)
    procs: list[subprocess.Popen] = []
    try:
        from models.migrate import upgrade

        upgrade(ENV["DATABASE_URL"])
        engine = sa.create_engine(ENV["DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_rows (id uuid primary key, payload text)"))

        # -- 1. submissions per second (no workers running: the queues just fill) --------
        procs.append(gunicorn("api:create_app()", PORT))
        procs.append(gunicorn("baseline:baseline_app()", PORT + 1))
        reg = httpx.post(
            f"http://127.0.0.1:{PORT}/api/v1/auth/register",
            json={
                "email": f"bench-{RUN}@example.com",
                "password": "bench-password",
                "organization_name": "Bench",
            },
        )
        reg.raise_for_status()
        headers = {"Authorization": f"Bearer {reg.json()['access_token']}"}
        body = {
            "topic": "benchmark",
            "custom_phases": ["a", "b", "c", "d", "e"],
            "settings": {"ai_model": "sim/echo"},
        }
        hammer(f"http://127.0.0.1:{PORT + 1}/submit", {}, {}, 50)  # warm-up
        hammer(f"http://127.0.0.1:{PORT}/api/v1/orchestrate", body, headers, 50)
        baseline_rps = hammer(f"http://127.0.0.1:{PORT + 1}/submit", {}, {}, args.requests)
        baton_rps = hammer(
            f"http://127.0.0.1:{PORT}/api/v1/orchestrate", body, headers, args.requests
        )
        stop_processes(procs)
        from baton.celery_app import app as baton_celery
        from orchestration.canvas import all_queues

        with baton_celery.connection_for_write() as conn:
            for queue in [*all_queues(), ENV["BENCH_BASELINE_QUEUE"]]:
                conn.default_channel.queue_purge(queue)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE jobs SET status = 'cancelled' WHERE status = 'queued'"))

        # -- 2. per-phase overhead: one worker process each, run one after the other -------
        # in pairs (a raw block, then a Baton block), each pair's ratio taken within
        # seconds: a burst of load from elsewhere on a shared machine falls on one pair,
        # and the median of the pairs' ratios leaves it out.
        live = redis.Redis.from_url(ENV["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
        pairs = []
        for _ in range(args.pairs):
            raw = raw_block(args.chains, procs)
            runs, engine_runs = baton_block(args.chains, procs, engine, live, body, headers)
            pairs.append(
                (
                    statistics.median(raw) / 5 * 1000,
                    statistics.median(runs) / 5 * 1000,
                    statistics.median(engine_runs) / 5 * 1000,
                )
            )
        raw_phase, baton_phase, engine_phase = (
            statistics.median(pair[i] for pair in pairs) for i in range(3)
        )
        baton_ratio = statistics.median(b / r for r, b, _ in pairs)
        engine_ratio = statistics.median(e / r for r, _, e in pairs)
        print(
            f"submissions/s   baton {baton_rps:8.1f}   baseline (insert+send) {baseline_rps:8.1f}   ratio {baton_rps / baseline_rps:.2f}"
        )
        print(
            f"per-phase ms    baton {baton_phase:8.2f}   baseline (raw chain)   {raw_phase:8.2f}   ratio {baton_ratio:.1f}x"
        )
        print(
            f"per-phase ms    engine {engine_phase:7.2f}   baseline (raw chain)   {raw_phase:8.2f}   ratio {engine_ratio:.1f}x   (job rows: created -> finished)"
        )
        print(
            f"                (medians of {args.pairs} pairs of a raw block and a Baton block, "
            f"{args.chains} 5-phase runs each; the Baton figure includes the HTTP request "
            "and the wait on the job's live channel)"
        )
        for i, (raw_ms, baton_ms, engine_ms) in enumerate(pairs, 1):
            print(
                f"                pair {i}: raw hop {raw_ms:5.2f} ms, baton {baton_ms:6.2f} ms "
                f"({baton_ms / raw_ms:.1f}x), engine {engine_ms:6.2f} ms ({engine_ms / raw_ms:.1f}x)"
            )
    finally:
        stop_processes(procs)
        drop_database(PG, DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
