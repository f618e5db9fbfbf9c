"""Benchmark (not a test): a conversation's reply against an agent run, in one run.

One worker process (two children) and the API under gunicorn, ``sim/echo`` at zero
latency. For the same agent, sequentially:

- the baseline: ``POST /agents/{id}/execute`` (a one-step ``agent_run`` job, waited on);
- ``POST /chat/conversations/{id}/messages`` without ``stream`` (a one-step ``chat`` job:
  the history read, the reply row written, the next reply looked for);
- the same with ``stream: true``: time to the ``start`` event, to the first ``token``, and
  to ``done``.

The conversation grows by two messages a round, so later prompts carry more history.
Needs PostgreSQL and Redis (the machine's, or BENCH_PG / BENCH_REDIS).
Usage: ``python bench/bench_chat.py [--rounds 30]``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
RUN = uuid.uuid4().hex[:8]
PG = os.environ.get("BENCH_PG", "postgresql+psycopg2://postgres@127.0.0.1:5432")
DB = f"baton_bench_{RUN}"
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379")
ENV = {
    **os.environ,
    "DATABASE_URL": f"{PG}/{DB}",
    "CELERY_BROKER_URL": f"{REDIS}/0",
    "CELERY_RESULT_BACKEND": f"{REDIS}/1",
    "REDIS_URL": f"{REDIS}/2",
    "BATON_QUEUE_PREFIX": f"bench{RUN}",
    "BATON_REDIS_PREFIX": f"bench{RUN}",
    "BATON_HOME": tempfile.mkdtemp(prefix="baton-bench-"),
    "BATON_API_RATE_LIMIT": "1000000 per minute",
}
os.environ.update(ENV)

import httpx  # noqa: E402
from scratch import create_database, drop_database, drop_run_keys  # noqa: E402

PORT = 18111


def sh(cmd: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        cmd, cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )


def ms(values: list[float]) -> str:
    return f"p50 {statistics.median(values) * 1000:7.1f} ms  max {max(values) * 1000:7.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=30)
    args = parser.parse_args()
    create_database(PG, DB)
    procs: list[subprocess.Popen] = []
    try:
        from baseline import celery_worker

        from models.migrate import upgrade
        from orchestration.canvas import all_queues

        upgrade(ENV["DATABASE_URL"])
        procs.append(celery_worker("workers", all_queues()))
        procs.append(
            sh(
                [
                    sys.executable,
                    "-m",
                    "gunicorn",
                    "-b",
                    f"127.0.0.1:{PORT}",
                    "-w",
                    "2",
                    "--threads",
                    "4",
                    "--timeout",
                    "60",
                    "api:create_app()",
                ]
            )  # fmt: skip
        )
        base = f"http://127.0.0.1:{PORT}/api/v1"
        deadline = time.monotonic() + 60
        while True:
            try:
                httpx.get(f"{base}/health/live", timeout=1)
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    raise SystemExit("the API did not start") from None
                time.sleep(0.2)
        with httpx.Client(base_url=base, timeout=60) as client:
            reg = client.post(
                "/auth/register",
                json={"email": f"bench-{RUN}@example.com", "password": "bench-password",
                      "organization_name": "Bench"},
            )  # fmt: skip
            reg.raise_for_status()
            h = {"Authorization": f"Bearer {reg.json()['access_token']}"}
            agent = client.post(
                "/agents",
                json={"name": "Bench", "config": {"providers": ["sim"],
                      "model_preferences": {"default": "sim/echo"}}},
                headers=h,
            ).json()  # fmt: skip
            conversation = client.post(
                "/chat/conversations", json={"agent_id": agent["id"]}, headers=h
            ).json()
            messages = f"/chat/conversations/{conversation['id']}/messages"
            execute, reply, start, first, done = [], [], [], [], []
            for n in range(args.rounds + 3):
                t = time.perf_counter()
                run = client.post(
                    f"/agents/{agent['id']}/execute", json={"input": f"question {n}"}, headers=h
                )
                assert run.json()["status"] == "completed", run.text
                execute.append(time.perf_counter() - t)
                t = time.perf_counter()
                answer = client.post(messages, json={"message": f"question {n}"}, headers=h)
                assert answer.json()["status"] == "completed", answer.text
                reply.append(time.perf_counter() - t)
                t = time.perf_counter()
                marks: dict[str, float] = {}
                with client.stream(
                    "POST", messages, json={"message": f"stream {n}", "stream": True}, headers=h
                ) as response:
                    for line in response.iter_lines():
                        if not line.startswith("data: "):
                            continue
                        kind = json.loads(line[6:])["type"]
                        marks.setdefault(kind, time.perf_counter() - t)
                assert "done" in marks, marks
                start.append(marks["start"])
                first.append(marks.get("token", marks["done"]))
                done.append(marks["done"])
        skip = slice(3, None)  # warm-up rounds
        execute, reply = execute[skip], reply[skip]
        ratio = statistics.median(reply) / statistics.median(execute)
        print(f"agent execute (baseline)   {ms(execute)}")
        print(f"chat message (waited)      {ms(reply)}   ratio {ratio:.2f}x")
        print(f"chat stream: start         {ms(start[skip])}")
        print(f"chat stream: first token   {ms(first[skip])}")
        print(f"chat stream: done          {ms(done[skip])}")
        print(
            f"(rounds {len(execute)}; the conversation ends with {2 * 2 * (args.rounds + 3)} messages)"
        )
    finally:
        from baseline import stop_processes

        stop_processes(procs)
        drop_database(PG, DB)
        drop_run_keys()


if __name__ == "__main__":
    main()
