"""Benchmark (not a test): CPU time of two Python-heavy parts of a step, in process, no
database: one unstreamed ``sim/echo`` provider call through ``workers.providers.complete``
(the openai SDK, no breaker), and building one step's live messages (five event rows to
the job channel and their Socket.IO emits, ``orchestration.live``, not sent).

CPU time per call moves far less than wall time on a shared machine; the minimum of the
rounds is the figure. Compare two trees by running each tree's copy alternately (the
script imports the tree it sits in). Needs nothing running for the call; the messages'
emitter wants ``REDIS_URL`` set (it connects only to send, which this does not).
Usage: ``python bench/cpu_engine_parts.py [--rounds 5]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT)]
os.environ.setdefault("BATON_HOME", tempfile.mkdtemp(prefix="baton-cpu-"))
os.environ.setdefault("REDIS_URL", "redis://127.0.0.1:6379/2")
os.environ.setdefault("BATON_REDIS_PREFIX", f"cpu{uuid.uuid4().hex[:8]}")


def _minimum(what: str, run: Callable[[], object], per_round: int, rounds: int) -> None:
    for _ in range(per_round // 5):  # warm-up
        run()
    spent = []
    for _ in range(rounds):
        began = time.process_time()
        for _ in range(per_round):
            run()
        spent.append((time.process_time() - began) / per_round * 1e6)
    print(f"{what}: min {min(spent):7.1f} us CPU, median {sorted(spent)[len(spent) // 2]:7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    from orchestration import live
    from workers.providers import complete
    from workers.providers.types import CompletionRequest

    request = CompletionRequest(
        model="sim/echo",
        messages=[
            {"role": "system", "content": "You are phase b of an orchestration."},
            {"role": "user", "content": "Topic: profiling. Earlier phases: a: " + "x" * 400},
        ],
        max_tokens=256,
    )
    _minimum("provider call (sim/echo, unstreamed)", lambda: complete(request), 300, args.rounds)

    event = {
        "job_id": uuid.uuid4(), "seq": 7, "created_at": datetime.now(UTC),
        "status": "running", "progress": 40, "organization_id": uuid.uuid4(),
        "agent_id": uuid.uuid4(), "kind": "orchestration", "title": "t",
        "data": {
            "phase": "a", "step": "a", "progress": 40, "execution_time_ms": 3,
            "provider": "sim", "model": "sim/echo", "prompt_tokens": 10,
            "completion_tokens": 20, "cost": "0.0001", "providers_tried": ["sim"],
            "attempts": [{"provider": "sim", "model": "sim/echo", "status": "ok",
                          "latency_ms": 1, "attempt": 1}],
        },
    }  # fmt: skip
    kinds = ("step.progress", "step.completed", "phase.completed", "phase.started", "step.started")
    events = [dict(event, type=kind) for kind in kinds]

    def build() -> None:
        live._batch.messages = []  # what _after_commit collects, not sent
        try:
            for one in events:
                live._publish_event(one)
        finally:
            live._batch.messages = None

    _minimum("a step's live messages (5 events), built", build, 1000, args.rounds)


if __name__ == "__main__":
    main()
