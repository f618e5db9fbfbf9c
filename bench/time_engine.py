"""Timing (not a profile, not a test): wall and CPU time of a step of the 5-phase ``sim``
orchestration in process, with no listener or profiler attached (profile_engine.py's
counters and cProfile slow a step several times over), split into the claim, the
provider call and the completion. Jobs written and run as profile_engine.py does.

Needs PostgreSQL and Redis (as profile_engine.py). Compare two trees by running each
tree's copy alternately. Usage: ``python bench/time_engine.py [--jobs 20] [--rounds 3]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

import profile_engine as pe  # sets the environment (its own database, queues) on import
from scratch import create_database, drop_database, drop_run_keys


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    create_database(pe.PG, pe.DB)
    try:
        from baseline import bench_principal

        from models.db import session_factory
        from models.migrate import upgrade
        from workers.engine import run

        upgrade(os.environ["DATABASE_URL"])
        sessions = session_factory()
        principal = bench_principal(sessions, f"time-{pe.RUN}")
        spent = {"claim": 0.0, "call": 0.0, "complete": 0.0}

        def timed(name: str, key: str) -> None:
            inner: Callable[..., Any] = getattr(run, name)

            def wrapper(*a: Any, **k: Any) -> Any:
                began = time.perf_counter()
                try:
                    return inner(*a, **k)
                finally:
                    spent[key] += time.perf_counter() - began

            setattr(run, name, wrapper)

        timed("claim", "claim")
        timed("complete", "call")
        timed("complete_step", "complete")
        pe.run_jobs(sessions, pe.make_jobs(sessions, principal, 3))  # warm-up
        walls = []
        for r in range(args.rounds):
            plans = pe.make_jobs(sessions, principal, args.jobs)
            steps = sum(len(s) for _, s in plans)
            spent.update(dict.fromkeys(spent, 0.0))
            wall, cpu = time.perf_counter(), time.process_time()
            pe.run_jobs(sessions, plans)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            walls.append(wall / steps * 1000)
            split = ", ".join(f"{k} {v / steps * 1000:5.2f}" for k, v in spent.items())
            print(
                f"round {r}: per step {walls[-1]:6.2f} ms wall, "
                f"{cpu / steps * 1000:6.2f} ms CPU (this process); {split}",
                flush=True,
            )
        print(
            f"median per step {statistics.median(walls):.2f} ms wall ({args.jobs * 5} steps a round)"
        )
    finally:
        from models.db import get_engine

        get_engine.cache_clear()
        drop_database(pe.PG, pe.DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
