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
import time

import profile_submit as ps  # sets the environment (its own database, queues) on import
from scratch import create_database


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    create_database(ps.PG, ps.DB)
    try:
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        _, client, headers = ps.registered_client()
        per_round = []
        for n in [100] + [args.requests] * args.rounds:  # the first round warms up
            start = time.process_time()
            for _ in range(n):
                response = client.post("/api/v1/orchestrate", json=ps.BODY, headers=headers)
                assert response.status_code == 202, response.get_json()
            per_round.append((time.process_time() - start) * 1000 / n)
        rounds = per_round[1:]
        print(
            f"CPU per submission (in process): min {min(rounds):.2f} ms"
            f"   rounds {' '.join(f'{x:.2f}' for x in rounds)}"
        )
    finally:
        ps.drop_scratch()


if __name__ == "__main__":
    main()
