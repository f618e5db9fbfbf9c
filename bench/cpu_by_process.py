"""Measurement (not a benchmark, not a test): the CPU a phase costs each process of the
stack, with a real worker, beside what a raw Celery chain hop costs its own.

``bench_engine.py``'s two blocks, one after the other: 5-phase ``sim/echo``
orchestrations through the API and one Baton worker process (``-c 2``), then raw chains
of 5 no-op tasks on one worker process of their own. Around each block's measured runs,
every process's CPU time (user + system, ``/proc/<pid>/stat``) and the time it waited
for a core (``/proc/<pid>/schedstat``) are read; the differences are printed per phase,
by process: the worker's main process and its pool children, PostgreSQL's backends,
Redis, the API and this client. CPU time moves with the machine less than wall time,
and it shows which process a change relieved (docs/engine-profile.md, "Session 17").

Needs PostgreSQL and Redis (as bench_engine.py), on this machine (it reads their
processes). Usage: ``python bench/cpu_by_process.py [--jobs 40]``.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import subprocess
import time

import bench_engine as be  # sets the environment (its own database, queues) on import
import httpx
import redis
import sqlalchemy as sa
from baseline import celery_worker, noop, stop_processes
from scratch import create_database, drop_database, drop_run_keys

TICKS = os.sysconf("SC_CLK_TCK")
BODY = {
    "topic": "cpu",
    "custom_phases": ["a", "b", "c", "d", "e"],
    "settings": {"ai_model": "sim/echo"},
}


def _group(pid: str, command: str, worker: int | None) -> str | None:
    if "postgres" in command:
        return "postgresql"
    if "redis-server" in command:
        return "redis"
    if "celery" in command and " worker" in command:
        return "worker: main process" if pid == str(worker) else "worker: pool children"
    if "gunicorn" in command:
        return "api (gunicorn)"
    if pid == str(os.getpid()):
        return "this client"
    return None


def snapshot(worker: int | None) -> dict[str, collections.Counter[str]]:
    """Seconds of CPU and of waiting for a core so far, summed by process group."""
    cpu: collections.Counter[str] = collections.Counter()
    waited: collections.Counter[str] = collections.Counter()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                command = f.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            with open(f"/proc/{pid}/schedstat") as f:
                wait_ns = int(f.read().split()[1])
        except OSError:  # gone meanwhile
            continue
        group = _group(pid, command, worker)
        if group is not None:
            cpu[group] += (int(fields[11]) + int(fields[12])) / TICKS
            waited[group] += wait_ns / 1e9
    return {"cpu": cpu, "waited": waited}


def report(
    title: str,
    before: dict[str, collections.Counter[str]],
    after: dict[str, collections.Counter[str]],
    phases: int,
) -> None:
    print(title)
    for group in sorted(after["cpu"], key=lambda g: -(after["cpu"][g] - before["cpu"][g])):
        cpu = (after["cpu"][group] - before["cpu"][group]) * 1000 / phases
        waited = (after["waited"][group] - before["waited"][group]) * 1000 / phases
        print(f"  {group:24s} CPU {cpu:6.2f} ms   waited for a core {waited:5.2f} ms")


def baton_block(jobs: int, engine: sa.Engine, procs: list[subprocess.Popen]) -> None:
    from orchestration.canvas import all_queues

    procs.append(be.gunicorn("api:create_app()", be.PORT))
    registered = httpx.post(
        f"http://127.0.0.1:{be.PORT}/api/v1/auth/register",
        json={"email": f"cpu-{be.RUN}@example.com", "password": "bench-password", "organization_name": "Cpu"},
    )  # fmt: skip
    registered.raise_for_status()
    headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
    worker = celery_worker("workers", all_queues())
    procs.append(worker)
    live = redis.Redis.from_url(be.ENV["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
    time.sleep(3)
    with httpx.Client(base_url=f"http://127.0.0.1:{be.PORT}", timeout=30) as client:

        def run() -> float:
            job = client.post("/api/v1/orchestrate", json=BODY, headers=headers).json()["id"]
            status, created, finished = be.wait_for_end(engine, live, job)
            if status != "completed":
                raise SystemExit(f"orchestration {job} ended {status}")
            return (finished - created).total_seconds() / 5

        for _ in range(5):  # warm-up
            run()
        before = snapshot(worker.pid)
        phases = [run() for _ in range(jobs)]
        after = snapshot(worker.pid)
    print(f"Baton: engine {statistics.median(phases) * 1000:.2f} ms a phase (median, job rows)")
    report("  by process, a phase:", before, after, jobs * 5)


def raw_block(jobs: int, procs: list[subprocess.Popen]) -> None:
    from celery import chain

    worker = celery_worker("baseline", [be.ENV["BENCH_BASELINE_QUEUE"]])
    procs.append(worker)
    time.sleep(3)
    hop = [noop.si().set(queue=be.ENV["BENCH_BASELINE_QUEUE"]) for _ in range(5)]
    for _ in range(5):  # warm-up
        chain(*hop).apply_async().get(timeout=30)
    before, began = snapshot(worker.pid), time.perf_counter()
    for _ in range(jobs):
        chain(*hop).apply_async().get(timeout=30)
    elapsed, after = time.perf_counter() - began, snapshot(worker.pid)
    print(f"raw chain: {elapsed * 1000 / (jobs * 5):.2f} ms a hop")
    report("  by process, a hop:", before, after, jobs * 5)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=40, help="jobs (and raw chains) measured")
    args = parser.parse_args()
    create_database(be.PG, be.DB)
    procs: list[subprocess.Popen] = []
    try:
        from models.migrate import upgrade

        upgrade(be.ENV["DATABASE_URL"])
        baton_block(args.jobs, sa.create_engine(be.ENV["DATABASE_URL"]), procs)
        stop_processes(procs)
        raw_block(args.jobs, procs)
    finally:
        stop_processes(procs)
        drop_database(be.PG, be.DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
