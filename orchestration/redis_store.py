"""The Redis that holds breaker state, worker heartbeats and live job channels.

One client per process (re-created after a fork), short socket timeouts so a Redis outage
slows nothing down for long, and every key under BATON_REDIS_PREFIX (the test suite makes
it unique per run). Nothing connects at import time.
"""

from __future__ import annotations

import os
import threading

import redis
from redis.commands.core import Script

from baton.settings import get_settings

SOCKET_TIMEOUT_SECONDS = 1.0

_lock = threading.Lock()
_client: tuple[int, str, redis.Redis] | None = None


def redis_client() -> redis.Redis | None:
    """The shared client, or None when REDIS_URL is empty (embedded mode)."""
    global _client
    url = get_settings().redis_url
    if not url:
        return None
    with _lock:
        if _client is None or _client[0] != os.getpid() or _client[1] != url:
            client = redis.Redis.from_url(
                url,
                socket_timeout=SOCKET_TIMEOUT_SECONDS,
                socket_connect_timeout=SOCKET_TIMEOUT_SECONDS,
                health_check_interval=30,
            )
            _client = (os.getpid(), url, client)
        return _client[2]


_scripts: dict[tuple[int, str], Script] = {}


def script(client: redis.Redis, source: str) -> Script:
    """``client.register_script(source)``, made once per client and script (it hashes the
    source; a request's counters run their scripts every request): EVALSHA, the text is
    sent only if Redis does not know it."""
    made = _scripts.get((id(client), source))
    if made is None or made.registered_client is not client:
        made = _scripts[(id(client), source)] = client.register_script(source)
    return made


def key(*parts: str) -> str:
    return ":".join((get_settings().redis_prefix, *parts))


def job_channel(job_id: str) -> str:
    """Pub/sub channel of a job's live output: ``<prefix>:jobs:<job id>:live``."""
    return key("jobs", job_id, "live")


WORKERS_KEY = ("workers",)


def workers_key() -> str:
    """A sorted set: worker hostname -> time of its last heartbeat (epoch seconds)."""
    return key(*WORKERS_KEY)
