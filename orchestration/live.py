"""Live job output over Redis pub/sub, for the SSE and WebSocket endpoints.

Channel ``<BATON_REDIS_PREFIX>:jobs:<job id>:live``; one JSON message per streamed chunk:

    {"type": "step.delta", "job_id": "...", "step_id": "...", "phase": "Execution",
     "step": "execution", "attempt": 1, "index": 0, "delta": "Simulated answer",
     "output_chars": 16}

``attempt`` numbers the provider calls of the step (a retried or fallen-back stream starts
again with a new attempt); ``index`` numbers the chunks of an attempt; concatenating the
deltas of one attempt gives its text. Pub/sub is fire-and-forget: the durable record is
the job's ``step.progress`` event rows, which carry the same text in coarser pieces.
Publishing is best effort: no Redis (embedded mode) or a Redis error never fails a step.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from orchestration import redis_store

log = logging.getLogger(__name__)

_WARN_EVERY_SECONDS = 30.0
_warned_at = 0.0


def publish(job_id: str, message: dict[str, Any]) -> None:
    global _warned_at
    client = redis_store.redis_client()
    if client is None:
        return
    try:
        client.publish(redis_store.job_channel(job_id), json.dumps(message, default=str))
    except Exception as exc:
        now = time.monotonic()
        if now - _warned_at > _WARN_EVERY_SECONDS:
            _warned_at = now
            log.warning("live output not published (redis): %s", exc)
