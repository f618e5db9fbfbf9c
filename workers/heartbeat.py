"""Each worker process (the prefork parent) says it is alive every few seconds: its
hostname goes into a Redis sorted set scored by time, which GET /health counts. A
worker that stops cleanly removes itself; one that is killed ages out."""

from __future__ import annotations

import logging
import time
from typing import Any

from celery import bootsteps

from baton.settings import get_settings
from orchestration import redis_store

log = logging.getLogger(__name__)

KEEP_SECONDS_FACTOR = 10  # entries older than this many periods are pruned


class Heartbeat(bootsteps.StartStopStep):
    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None
        self.interval = get_settings().worker_heartbeat_seconds

    def start(self, worker: Any) -> None:
        if redis_store.redis_client() is None:
            return  # embedded mode: GET /health pings the workers through the broker
        self.beat(worker)
        self.tref = worker.timer.call_repeatedly(self.interval, self.beat, (worker,), priority=10)

    def beat(self, worker: Any) -> None:
        client = redis_store.redis_client()
        if client is None:
            return
        now = time.time()
        key = redis_store.workers_key()
        try:
            pipe = client.pipeline(transaction=False)
            pipe.zadd(key, {worker.hostname: now})
            pipe.zremrangebyscore(key, "-inf", now - self.interval * KEEP_SECONDS_FACTOR)
            pipe.expire(key, int(self.interval * KEEP_SECONDS_FACTOR) + 1)
            pipe.execute()
        except Exception as exc:  # Redis down: the next beat tries again
            log.warning("worker heartbeat not written: %s", exc)

    def stop(self, worker: Any) -> None:
        if self.tref is not None:
            self.tref.cancel()
            self.tref = None
            client = redis_store.redis_client()
            try:
                if client is not None:
                    client.zrem(redis_store.workers_key(), worker.hostname)
            except Exception:
                pass
