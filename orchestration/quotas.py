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

# The spend as a Lua function: this module's script calls it, and so does the API's
# rate-limit script (api/ratelimits.py), which spends a request's quota in the round trip
# that counts its user's and organization's rate limits. ``limit`` -1: none.
SPEND_FUNCTION = """
local function spend_quota(key, limit, expire_at)
  local used = tonumber(redis.call('GET', key) or '0')
  if limit >= 0 and used >= limit then
    return {0, used}
  end
  used = redis.call('INCR', key)
  if used == 1 then
    redis.call('EXPIREAT', key, expire_at)
  end
  return {1, used}
end
"""
# KEYS[1] the month's counter; ARGV[1] the limit; ARGV[2] when the key expires.
_SPEND = SPEND_FUNCTION + "return spend_quota(KEYS[1], tonumber(ARGV[1]), ARGV[2])"

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


@dataclass(frozen=True)
class PendingSpend:
    """One request's spend, before it is made: the counter, its script arguments and what
    the answer means (``result``)."""

    key: str
    limit: int | None
    resets_at: datetime

    def args(self) -> list[int]:
        # The counter outlives its month by a week, then Redis forgets it.
        expire_at = int(self.resets_at.timestamp()) + 7 * 86400
        return [-1 if self.limit is None else self.limit, expire_at]

    def result(self, allowed: int, count: int) -> Spend:
        return Spend(bool(allowed), int(count), self.limit, self.resets_at)


def pending_spend(
    organization_id: uuid.UUID, *, limit: int | None, now: datetime | None = None
) -> PendingSpend:
    now = now or datetime.now(UTC)
    return PendingSpend(_counter_key(organization_id, now), limit, next_month_start(now))


def spend(organization_id: uuid.UUID, *, limit: int | None, now: datetime | None = None) -> Spend:
    """Count one request unless the month's quota is spent."""
    return spend_pending(pending_spend(organization_id, limit=limit, now=now))


def spend_pending(pending: PendingSpend) -> Spend:
    client = redis_store.redis_client()
    if client is None:
        with _local_lock:
            used = _local_counts.get(pending.key, 0)
            if pending.limit is not None and used >= pending.limit:
                return pending.result(0, used)
            _local_counts[pending.key] = used + 1
            return pending.result(1, used + 1)
    try:
        allowed, count = redis_store.script(client, _SPEND)(keys=[pending.key], args=pending.args())
    except redis.RedisError:
        # Like the breakers: a Redis outage lets requests through rather than stop the API.
        log.warning("quota counter unavailable; request not counted (%s)", pending.key)
        return pending.result(1, 0)
    return pending.result(allowed, count)


def refund(pending: PendingSpend) -> None:
    """Give back a spend made in Redis for a request that was then refused (rate-limited):
    a refused request does not count."""
    client = redis_store.redis_client()
    if client is None:
        return
    try:
        client.decr(pending.key)
    except redis.RedisError:
        log.warning("quota counter unavailable; a refused request stays counted")


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
