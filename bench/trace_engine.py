"""Trace (not a benchmark, not a test): where the wall time of a 5-phase ``sim`` job goes
with a real worker, from its events' timestamps, as ``bench_engine.py`` runs it (one job
at a time through the API, the same worker, the same wait for its end on its live channel).

Each event's ``created_at`` is taken when its statement is built (before the commit), so:
``step.started -> step.completed`` is the rest of the claim's transaction, its commit, the
provider call and the completion up to its events; ``step.completed -> next
step.started`` is the completion's events, budget settlement and commit, the Celery hop
to the next task and the claim up to its events.

Needs PostgreSQL and Redis (as bench_engine.py). Usage: ``python bench/trace_engine.py [--jobs 20]``.
"""

from __future__ import annotations

import argparse
import statistics
import time

import bench_engine as be  # sets the environment (its own database, queues) on import
import httpx
import redis
import sqlalchemy as sa
from scratch import create_database, drop_database, drop_run_keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    create_database(be.PG, be.DB)
    procs = []
    try:
        from baseline import celery_worker

        from models.migrate import upgrade
        from orchestration.canvas import all_queues

        upgrade(be.ENV["DATABASE_URL"])
        engine = sa.create_engine(be.ENV["DATABASE_URL"])
        procs.append(be.gunicorn("api:create_app()", be.PORT + 10))
        reg = httpx.post(
            f"http://127.0.0.1:{be.PORT + 10}/api/v1/auth/register",
            json={"email": f"trace-{be.RUN}@example.com", "password": "bench-password",
                  "organization_name": "Trace"},
        )  # fmt: skip
        reg.raise_for_status()
        headers = {"Authorization": f"Bearer {reg.json()['access_token']}"}
        body = {"topic": "benchmark", "custom_phases": ["a", "b", "c", "d", "e"],
                "settings": {"ai_model": "sim/echo"}}  # fmt: skip
        procs.append(celery_worker("workers", all_queues()))
        time.sleep(3)
        seen: dict[str, tuple[float, float, float]] = {}
        live = redis.Redis.from_url(be.ENV["REDIS_URL"]).pubsub(ignore_subscribe_messages=True)
        with httpx.Client(base_url=f"http://127.0.0.1:{be.PORT + 10}", timeout=30) as client:
            for i in range(args.jobs + 3):  # 3 warm-up jobs, as bench_engine
                posted = time.time()
                job_id = client.post("/api/v1/orchestrate", json=body, headers=headers).json()["id"]
                answered = time.time()
                be.wait_for_end(engine, live, job_id)
                if i >= 3:
                    seen[job_id] = (posted, answered, time.time())
        gaps: dict[str, list[float]] = {}

        def add(what: str, seconds: float) -> None:
            gaps.setdefault(what, []).append(seconds * 1000)

        with engine.connect() as conn:
            for job_id, (posted, answered, ended) in seen.items():
                events = conn.execute(
                    sa.text("SELECT type, extract(epoch FROM created_at) FROM job_events "
                            "WHERE job_id = :id ORDER BY seq"), {"id": job_id},
                ).all()  # fmt: skip
                at = [(t, float(e)) for t, e in events]
                queued = next(e for t, e in at if t == "job.queued")
                starts = [e for t, e in at if t == "step.started"]
                dones = [e for t, e in at if t == "step.completed"]
                completed = next(e for t, e in at if t == "job.completed")
                add("job (POST to its end seen)", ended - posted)
                add("POST answered", answered - posted)
                add("job.queued -> first step.started", starts[0] - queued)
                for s, d in zip(starts, dones, strict=True):
                    add("step.started -> step.completed", d - s)
                for d, s in zip(dones, starts[1:], strict=False):
                    add("step.completed -> next step.started", s - d)
                add("last step.completed -> job.completed", completed - dones[-1])
                add("job.completed -> end seen by the client", ended - completed)
        for what, values in gaps.items():
            print(f"{what:42s} median {statistics.median(values):7.2f} ms  (n={len(values)})")
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait()
        drop_database(be.PG, be.DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
