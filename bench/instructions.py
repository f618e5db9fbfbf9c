"""Benchmark (not a test): machine instructions a job submission, or a step, costs Baton's
own process, counted by valgrind (callgrind), not timed.

On a shared machine a time (wall or CPU) moves with the load of the machine's other
tenants by more than a change worth making (the same submission measured 1.8 to 3.7 ms of
CPU within an hour); an instruction count does not: two runs of the same code agree to
about 0.3 %. So an A/B of a small change is two counts, one per tree. The count is of
this process only (PostgreSQL, Redis and the broker run outside valgrind), after a
warm-up; instrumentation is switched on for the measured loop alone (``callgrind_control``).

- ``submit``: ``POST /api/v1/orchestrate`` (5 custom phases, ``sim/echo``) through Flask's
  test client, as bench/cpu_submit.py sends it (the test client's own work included).
- ``step``: a step of the 5-phase ``sim`` orchestration run in process, as
  bench/time_engine.py runs it (the provider call included).

Needs valgrind (``apt-get install valgrind``), PostgreSQL and Redis. Usage:
``python bench/instructions.py submit [--count 40]`` or ``... step [--count 8]`` (jobs of
5 steps). Compare two trees by running each tree's copy.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def _instrument(on: bool) -> None:
    subprocess.run(
        ["callgrind_control", "-i", "on" if on else "off", str(os.getpid())],
        check=True,
        capture_output=True,
    )


def child(kind: str, count: int, database_url: str) -> None:
    """Run under valgrind: warm up, then ``count`` operations with instrumentation on."""
    if kind == "submit":
        import profile_submit as ps  # sets the environment on import

        os.environ["DATABASE_URL"] = database_url  # the parent's migrated database
        _, client, headers = ps.registered_client()
        for _ in range(30):
            client.post("/api/v1/orchestrate", json=ps.BODY, headers=headers)
        _instrument(True)
        for _ in range(count):
            response = client.post("/api/v1/orchestrate", json=ps.BODY, headers=headers)
            assert response.status_code == 202, response.get_json()
        _instrument(False)
        return
    import profile_engine as pe  # sets the environment on import

    os.environ["DATABASE_URL"] = database_url
    from baseline import bench_principal

    from models.db import session_factory

    sessions = session_factory()
    principal = bench_principal(sessions, "instructions")
    pe.run_jobs(sessions, pe.make_jobs(sessions, principal, 3))
    plans = pe.make_jobs(sessions, principal, count)
    _instrument(True)
    pe.run_jobs(sessions, plans)
    _instrument(False)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("kind", choices=["submit", "step"])
    parser.add_argument("--count", type=int, help="submissions (40), or jobs of 5 steps (8)")
    parser.add_argument("--child", help=argparse.SUPPRESS)  # the database, under valgrind
    args = parser.parse_args()
    count = args.count or (40 if args.kind == "submit" else 8)
    if args.child:
        child(args.kind, count, args.child)
        return
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")

    import profile_submit as ps  # its database name and the environment
    from scratch import create_database

    create_database(ps.PG, ps.DB)
    scratch = tempfile.mkdtemp(prefix="callgrind-")
    try:
        from models.migrate import upgrade

        upgrade(os.environ["DATABASE_URL"])
        run = subprocess.run(
            [
                "valgrind", "--tool=callgrind", "--instr-atstart=no",
                f"--callgrind-out-file={scratch}/callgrind.out",
                sys.executable, __file__, args.kind, "--count", str(count),
                "--child", os.environ["DATABASE_URL"],
            ],
            cwd=HERE,
            # The same dict layouts each run; this run's names, so that the queues the
            # child fills are the ones emptied below.
            env={**os.environ, "PYTHONHASHSEED": "0", "BENCH_RUN": ps.RUN},
            capture_output=True,
            text=True,
        )  # fmt: skip
        collected = re.search(r"Collected : ([\d,]+)", run.stderr)
        if run.returncode != 0 or collected is None:
            raise SystemExit(f"valgrind run failed:\n{run.stderr[-3000:]}")
        per = int(collected.group(1).replace(",", "")) / (count * (5 if args.kind == "step" else 1))
        what = "submission" if args.kind == "submit" else "step"
        print(f"instructions a {what}: {per / 1e6:.3f} M   ({count} counted, this process only)")
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        ps.drop_scratch()


if __name__ == "__main__":
    main()
