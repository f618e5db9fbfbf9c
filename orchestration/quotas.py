"""Monthly API quotas (seed 003): every authenticated request counts against its
organization's calendar month (UTC).

Counted in Redis with one Lua script (check and increment are one atomic step, across
every API process): a refused request does not count. Without Redis (the embedded mode,
one API process) the count lives in that process.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import redis

from orchestration import redis_store

# KEYS[1] the month's counter; ARGV[1] the limit (-1: none); ARGV[2] when the key expires.
_SPEND = """
local used = tonumber(redis.call('GET', KEYS[1]) or '0')
local limit = tonumber(ARGV[1])
if limit >= 0 and used >= limit then
  return {0, used}
end
used = redis.call('INCR', KEYS[1])
if used == 1 then
  redis.call('EXPIREAT', KEYS[1], ARGV[2])
end
return {1, used}
"""

log = logging.getLogger(__name__)
_local_lock = threading.Lock()
_local_counts: dict[str, int] = {}


@dataclass(frozen=True)
class Spend:
    allowed: bool
    used: int
    limit: int | None
    resets_at: datetime


def month_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)


def next_month_start(now: datetime) -> datetime:
    start = month_start(now)
    return (
        start.replace(year=start.year + 1, month=1)
        if start.month == 12
        else start.replace(month=start.month + 1)
    )


def _counter_key(organization_id: uuid.UUID, now: datetime) -> str:
    return redis_store.key("quota", str(organization_id), month_start(now).strftime("%Y-%m"))


def spend(organization_id: uuid.UUID, *, limit: int | None, now: datetime | None = None) -> Spend:
    """Count one request unless the month's quota is spent."""
    now = now or datetime.now(UTC)
    key = _counter_key(organization_id, now)
    resets_at = next_month_start(now)
    client = redis_store.redis_client()
    if client is None:
        with _local_lock:
            used = _local_counts.get(key, 0)
            if limit is not None and used >= limit:
                return Spend(False, used, limit, resets_at)
            _local_counts[key] = used + 1
            return Spend(True, used + 1, limit, resets_at)
    # The counter outlives its month by a week, then Redis forgets it.
    expire_at = int(resets_at.timestamp()) + 7 * 86400
    try:
        spend_script = redis_store.script(client, _SPEND)
        allowed, count = spend_script(keys=[key], args=[-1 if limit is None else limit, expire_at])
    except redis.RedisError:
        # Like the breakers: a Redis outage lets requests through rather than stop the API.
        log.warning("quota counter unavailable; request for %s not counted", organization_id)
        return Spend(True, 0, limit, resets_at)
    return Spend(bool(allowed), int(count), limit, resets_at)


def used(organization_id: uuid.UUID, *, now: datetime | None = None) -> int:
    """Requests counted this month (0 when Redis cannot be read: a display figure)."""
    key = _counter_key(organization_id, now or datetime.now(UTC))
    client = redis_store.redis_client()
    if client is None:
        with _local_lock:
            return _local_counts.get(key, 0)
    try:
        value = client.get(key)
    except redis.RedisError:
        return 0
    return int(value or 0)
