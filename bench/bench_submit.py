"""Benchmark (not a test): job submissions per second, beside the stack's own limit.

Baton's ``POST /api/v1/orchestrate`` (5 phases, ``sim`` model) under gunicorn, beside a
bare Flask route under the same gunicorn settings that inserts one row and sends one
Celery task (bench/baseline.py), in the same run, alternating rounds so that load from
elsewhere on the machine falls on both. No workers run: the queues just fill, and are
purged at the end.

Needs PostgreSQL and Redis (the machine's, or BENCH_PG / BENCH_REDIS). Prints both rates
and their ratio. Usage: ``python bench/bench_submit.py [--requests 1000] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics

import bench_engine as stack  # the same scratch database, queues and gunicorn helpers
import httpx
import sqlalchemy as sa
from scratch import create_database, drop_database


def cpu_seconds(root: int) -> float:
    """User+system CPU of a process and its children (a gunicorn master and its workers),
    from /proc: the API's own cost, whatever else runs on the machine."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(entry) == root or int(fields[1]) == root:  # fields[1]: the parent's pid
            total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def measured(proc, url: str, body: dict, headers: dict, total: int, concurrency: int):  # type: ignore[no-untyped-def]
    """(requests per second, the server's CPU milliseconds per request) for one round."""
    before = cpu_seconds(proc.pid)
    rate = stack.hammer(url, body, headers, total, concurrency)
    return rate, (cpu_seconds(proc.pid) - before) * 1000 / total


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000, help="per round and side")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=8)
    # Two helpers benchmarking on one machine must not hit each other's servers.
    parser.add_argument("--port", type=int, default=int(os.environ.get("BENCH_PORT", "18111")))
    args = parser.parse_args()
    baton_port, baseline_port = args.port, args.port + 1

    create_database(stack.PG, stack.DB)
    procs = []
    try:
        from models.migrate import upgrade

        upgrade(stack.ENV["DATABASE_URL"])
        engine = sa.create_engine(stack.ENV["DATABASE_URL"])
        with engine.begin() as conn:
            conn.execute(sa.text("CREATE TABLE bench_rows (id uuid primary key, payload text)"))
        engine.dispose()
        procs.append(stack.gunicorn("api:create_app()", baton_port))
        procs.append(stack.gunicorn("baseline:baseline_app()", baseline_port))
        reg = httpx.post(
            f"http://127.0.0.1:{baton_port}/api/v1/auth/register",
            json={
                "email": f"bench-{stack.RUN}@example.com",
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
        baton_url = f"http://127.0.0.1:{baton_port}/api/v1/orchestrate"
        baseline_url = f"http://127.0.0.1:{baseline_port}/submit"
        stack.hammer(baseline_url, {}, {}, 100, args.concurrency)  # warm-up
        stack.hammer(baton_url, body, headers, 100, args.concurrency)
        baton, baseline, baton_cpu, baseline_cpu = [], [], [], []
        for _ in range(args.rounds):
            rate, cpu = measured(procs[1], baseline_url, {}, {}, args.requests, args.concurrency)
            baseline.append(rate)
            baseline_cpu.append(cpu)
            rate, cpu = measured(
                procs[0], baton_url, body, headers, args.requests, args.concurrency
            )
            baton.append(rate)
            baton_cpu.append(cpu)
        b, r = statistics.median(baton), statistics.median(baseline)
        print(
            f"submissions/s   baton {b:8.1f}   baseline (insert+send) {r:8.1f}   ratio {b / r:.2f}"
            f"   (median of {args.rounds} rounds of {args.requests}, {args.concurrency} clients)"
        )
        print(
            "                rounds baton "
            + " ".join(f"{x:.0f}" for x in baton)
            + " / baseline "
            + " ".join(f"{x:.0f}" for x in baseline)
        )
        # CPU per request moves far less than the rates on a shared machine.
        bc, rc = statistics.median(baton_cpu), statistics.median(baseline_cpu)
        print(
            f"server CPU/req  baton {bc:6.2f} ms   baseline {rc:6.2f} ms   baseline/baton {rc / bc:.2f}"
            "   rounds baton "
            + " ".join(f"{x:.2f}" for x in baton_cpu)
            + " / baseline "
            + " ".join(f"{x:.2f}" for x in baseline_cpu)
        )
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        from baton.celery_app import app as baton_celery
        from orchestration.canvas import all_queues

        with baton_celery.connection_for_write() as conn:
            for queue in [*all_queues(), stack.ENV["BENCH_BASELINE_QUEUE"]]:
                conn.default_channel.queue_purge(queue)
        drop_database(stack.PG, stack.DB)


if __name__ == "__main__":
    main()
