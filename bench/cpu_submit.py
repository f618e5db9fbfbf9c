"""Benchmark (not a test): the process's CPU time per job submission, in process.

The Flask test client POSTs ``/api/v1/orchestrate`` (5 custom phases, ``sim/echo``) on a
scratch database, as bench/profile_submit.py does, without a profiler: rounds of
``--requests`` submissions after a warm-up, each timed by ``time.process_time()``.
CPU time moves far less than a rate on a shared machine; the minimum of the rounds is the
figure. The queues are purged at the end. Usage:
``python bench/cpu_submit.py [--requests 300] [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import uuid

RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_cpu_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
os.environ.update(
    DATABASE_URL=f"{PG}/{DB}",
    CELERY_BROKER_URL=f"{REDIS}/0",
    CELERY_RESULT_BACKEND=f"{REDIS}/1",
    REDIS_URL=f"{REDIS}/2",
    BATON_QUEUE_PREFIX=f"cpu{RUN}",
    BATON_REDIS_PREFIX=f"cpu{RUN}",
    BATON_HOME=tempfile.mkdtemp(prefix="baton-cpu-"),
    BATON_API_RATE_LIMIT="1000000 per minute",
)

from scratch import create_database, drop_database  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    create_database(PG, DB)
    try:
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        from api import create_app

        client = create_app().test_client()
        reg = client.post(
            "/api/v1/auth/register",
            json={
                "email": f"cpu-{RUN}@example.com",
                "password": "profile-password",
                "organization_name": "Cpu",
            },
        )
        assert reg.status_code == 201, reg.get_json()
        headers = {"Authorization": f"Bearer {reg.get_json()['access_token']}"}
        body = {
            "topic": "benchmark",
            "custom_phases": ["a", "b", "c", "d", "e"],
            "settings": {"ai_model": "sim/echo"},
        }
        per_round = []
        for n in [100] + [args.requests] * args.rounds:  # the first round warms up
            start = time.process_time()
            for _ in range(n):
                response = client.post("/api/v1/orchestrate", json=body, headers=headers)
                assert response.status_code == 202, response.get_json()
            per_round.append((time.process_time() - start) * 1000 / n)
        rounds = per_round[1:]
        print(
            f"CPU per submission (in process): min {min(rounds):.2f} ms"
            f"   rounds {' '.join(f'{x:.2f}' for x in rounds)}"
        )
    finally:
        from baton.celery_app import app as baton_celery
        from orchestration.canvas import all_queues

        with baton_celery.connection_for_write() as conn:
            for queue in all_queues():
                conn.default_channel.queue_purge(queue)
        drop_database(PG, DB)


if __name__ == "__main__":
    main()
