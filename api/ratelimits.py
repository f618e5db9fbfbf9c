"""Rate limits (Flask-Limiter): who is counted, in which bucket, and how a 429 reads.

Buckets (issue 9, seeds 002/003/004):
- one per user across every route (an application limit; anonymous callers by IP),
- one per organization across every route and user (a second application limit),
- per endpoint where a seed sets one (builds 10/min, analyses 5/min per user),
- sign-in and sign-up per client IP.
Every key lives under ``<BATON_REDIS_PREFIX>:ratelimit:`` in Redis.

The two buckets every request has (the user's, the organization's) are Baton's own count
(``count_request_buckets``): one Lua script counts both and spends the request's monthly
quota, one round trip, and Flask-Limiter's per-request evaluation (its limits resolved,
parsed, filtered and counted one round trip each) is skipped when nothing else applies.
Flask-Limiter keeps the rest: the per-route limits, a dialect's buckets, the in-memory
fallback of those, and the ``X-RateLimit-*`` headers of whichever bucket answers.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import redis
from flask import Flask, Response, current_app, g, has_request_context, request
from flask_limiter import (
    ApplicationLimit,
    ExemptionScope,
    Limiter,
    RateLimitExceeded,
    RequestLimit,
)
from flask_limiter.util import get_remote_address
from limits import RateLimitItem, parse_many
from limits.storage import MemoryStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter

from api.compat import registry as compat_registry
from api.errors import error_response
from orchestration import quotas
from orchestration.errors import DomainError

log = logging.getLogger(__name__)


def authenticated_principal():  # type: ignore[no-untyped-def]
    """The request's principal when it carries a valid token, else None (answered by the view).

    Uses the same cached principal as the view, so a token is verified once per request.
    """
    from api.security import stream_principal

    # Streams may carry their token as ``?token=`` (an EventSource cannot set headers).
    if not (request.headers.get("Authorization") or request.args.get("token")):
        return None
    try:
        return stream_principal()
    except DomainError:
        return None


def rate_limit_key() -> str:
    """Per organization+user when authenticated, else per client IP."""
    principal = authenticated_principal()
    if principal is not None:
        return f"user:{principal.organization_id}:{principal.user_id}"
    return f"ip:{get_remote_address()}"


def organization_key() -> str:
    principal = authenticated_principal()
    return f"org:{principal.organization_id}" if principal is not None else ""


def _anonymous() -> bool:
    return authenticated_principal() is None


def ip_key() -> str:
    return f"ip:{request.remote_addr or 'unknown'}"


def user_limit() -> str:
    return current_app.config["BATON_USER_RATE_LIMIT"]


def organization_limit() -> str:
    return current_app.config["BATON_ORG_RATE_LIMIT"]


def build_limit() -> str:
    return current_app.config["BATON_BUILD_RATE_LIMIT"]


def analysis_limit() -> str:
    return current_app.config["BATON_ANALYSIS_RATE_LIMIT"]


def login_limit() -> str:
    return current_app.config["BATON_LOGIN_RATE_LIMIT"]


def two_factor_limit() -> str:
    return current_app.config["BATON_2FA_RATE_LIMIT"]


def two_factor_key() -> str:
    """2FA attempts count per user (from the temp_token or the bearer), else per IP:
    guessing codes with many temp_tokens or addresses gains nothing."""
    from api.auth.tokens import temp_token_subject

    body = request.get_json(silent=True)
    token = body.get("temp_token") if isinstance(body, dict) else None
    subject = temp_token_subject(token) if isinstance(token, str) else None
    if subject is None:
        principal = authenticated_principal()
        subject = str(principal.user_id) if principal is not None else None
    return f"2fa:{subject}" if subject else f"2fa-ip:{request.remote_addr or 'unknown'}"


# -- a dialect's own limits (issue 15): its document's numbers, in buckets of its own ----------

# A limit string for a kind of bucket a request's dialect does not set (exempt anyway).
_UNUSED = "1 per second"


def _dialect_limit(kind: str):  # type: ignore[no-untyped-def]
    """The request's dialect's limit for ``kind`` (``ip``, ``user``, ``organization``):
    ``Dialect.rate_limit`` (its document's, or ``BATON_DIALECT_RATE_LIMITS`` in config)."""

    def value() -> str:
        dialect = compat_registry.current()
        return (dialect.rate_limit(kind) if dialect else None) or _UNUSED

    def exempt() -> bool:
        dialect = compat_registry.current()
        if dialect is None or not dialect.rate_limit(kind):
            return True
        return kind == "organization" and _anonymous()

    def key() -> str:
        dialect = compat_registry.current()
        name = dialect.name if dialect else "-"
        if kind == "ip":
            return f"{name}:{ip_key()}"
        return f"{name}:{organization_key() if kind == 'organization' else rate_limit_key()}"

    return ApplicationLimit(value, key_function=key, scope=f"dialect-{kind}", exempt_when=exempt)


DIALECT_LIMITS = tuple(_dialect_limit(kind) for kind in ("ip", "user", "organization"))


def _peek_dialect_limit(limiter: Limiter) -> RequestLimit | None:
    """The dialect's bucket with the fewest left, read without counting: for answers the
    limiter never saw (an unknown route, 405, the edge's 413/414/415), so they carry the
    headers too (seed 002: "Every response includes rate limit information")."""
    # The key prefix Flask-Limiter puts before every key it counts (RATELIMIT_KEY_PREFIX):
    # it keeps it on the extension only.
    prefix = [limiter._key_prefix] if limiter._key_prefix else []
    peeked = []
    for application_limit in DIALECT_LIMITS:
        for lim in application_limit:
            if lim.is_exempt:
                continue
            args = [*prefix, lim.key_func(), lim.scope_for(request.endpoint or "", request.method)]
            peeked.append(RequestLimit(limiter, lim.limit, args, breached=False, shared=True))
    return min(peeked, key=lambda lim: lim.remaining) if peeked else None


# -- storage ----------------------------------------------------------------------------------


def _counted_in_request() -> dict[str, tuple[int, float]] | None:
    """This request's increments: key -> (count, expiry as a timestamp)."""
    if not has_request_context():
        return None
    return g.setdefault("baton_rate_counts", {})


def remember_count(key: str, count: int, expires_at: float) -> None:
    """What ``CountingRedisStorage`` answers for ``key`` for the rest of the request."""
    seen = _counted_in_request()
    if seen is not None:
        seen[key] = (count, expires_at)


# g's name for a quota spend made by the buckets' script: (PendingSpend, Spend), taken by
# api/quotas.py's hook, or given back at the request's teardown.
SPENT_BY_LIMITER = "baton_quota_spent"


class _MemoryFallback:
    """Counting in this process while the Redis storage is unreachable (as Flask-Limiter's
    own in-memory fallback), with Redis tried again after ``RETRY_SECONDS``."""

    RETRY_SECONDS = 5.0

    def __init__(self) -> None:
        self.limiter = FixedWindowRateLimiter(MemoryStorage())
        self.dead_until = 0.0
        self.lock = threading.Lock()

    def active(self) -> bool:
        return time.monotonic() < self.dead_until

    def fail(self, error: Exception) -> None:
        with self.lock:
            if not self.active():
                log.warning(
                    "rate limit storage unreachable (%s): counting in memory for %.0f s",
                    error,
                    self.RETRY_SECONDS,
                )
            self.dead_until = time.monotonic() + self.RETRY_SECONDS


class CountingRedisStorage(RedisStorage):
    """limits' Redis storage (``baton+redis://`` for Flask-Limiter's storage URI) whose
    increment also answers the key's time to live, kept for the rest of the request.

    A request hits each of its limits once (a Lua INCRBY+EXPIRE, as limits' own script),
    then its ``X-RateLimit-*`` headers ask the limit's window: a GET and a TTL, two more
    round trips for what the increment has just said. Here ``get`` and ``get_expiry``
    of a key this request incremented answer from that increment; any other key (or
    outside a request) reads Redis as before. Counting, keys and expiry are unchanged.

    ``count_buckets`` counts a request's own buckets and spends its monthly quota in one
    script (``count_request_buckets``).
    """

    STORAGE_SCHEME = ["baton+redis", "baton+rediss"]
    SCRIPT_INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
return {current, redis.call("ttl", KEYS[1])}
"""
    # KEYS: the buckets' counters in counting order, then the quota's counter if any.
    # ARGV[1]: how many buckets; then each bucket's expiry and amount; then the quota's
    # limit and expiry (orchestration.quotas). Counts as limits' fixed window does, and
    # stops at the first bucket over its amount, as Flask-Limiter does: a refused request
    # counts in no later bucket and spends no quota.
    SCRIPT_COUNT_BUCKETS = (
        quotas.SPEND_FUNCTION
        + """
local buckets = tonumber(ARGV[1])
local out = {}
for i = 1, buckets do
    local current = redis.call("incrby", KEYS[i], 1)
    if current == 1 then
        redis.call("expire", KEYS[i], ARGV[2 * i])
    end
    out[#out + 1] = current
    out[#out + 1] = redis.call("ttl", KEYS[i])
    if current > tonumber(ARGV[2 * i + 1]) then
        return out
    end
end
if #KEYS > buckets then
    local spent = spend_quota(KEYS[buckets + 1], tonumber(ARGV[2 * buckets + 2]),
        ARGV[2 * buckets + 3])
    out[#out + 1] = spent[1]
    out[#out + 1] = spent[2]
end
return out
"""
    )

    def __init__(self, uri: str, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(uri.removeprefix("baton+"), **options)
        self.fallback = _MemoryFallback()

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(
            self.SCRIPT_INCR_EXPIRE_TTL
        )
        self.lua_count_buckets = self.get_connection().register_script(self.SCRIPT_COUNT_BUCKETS)

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        current, ttl = self.lua_incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        remember_count(key, int(current), max(int(ttl), 0) + time.time())
        return int(current)

    def count_buckets(
        self, buckets: Sequence[tuple[str, RateLimitItem]], spend: quotas.PendingSpend | None
    ) -> tuple[list[int], quotas.Spend | None]:
        """Count one hit in each bucket (its key, its limit) in order up to the first one
        over its amount, then spend ``spend`` if none was: the counts made, and the spend
        (None when not made)."""
        keys = [self.prefixed_key(key) for key, _ in buckets]
        args: list[int] = [len(buckets)]
        for _, item in buckets:
            args += [item.get_expiry(), item.amount]
        if spend is not None:
            keys.append(spend.key)
            args += spend.args()
        out = self.lua_count_buckets(keys, args)
        counts = []
        # A pair per bucket counted (fewer when one was over), then the spend's if made.
        for (key, _), current, ttl in zip(buckets, out[0::2], out[1::2], strict=False):
            remember_count(key, int(current), max(int(ttl), 0) + time.time())
            counts.append(int(current))
        spent = (
            spend.result(*out[-2:]) if spend is not None and len(out) > 2 * len(buckets) else None
        )
        return counts, spent

    def get(self, key: str) -> int:
        seen = _counted_in_request()
        if seen is not None and key in seen:
            return seen[key][0]
        return super().get(key)

    def get_expiry(self, key: str) -> float:
        seen = _counted_in_request()
        if seen is not None and key in seen:
            return seen[key][1]
        return super().get_expiry(key)


def storage_uri(redis_url: str) -> str:
    """Flask-Limiter's storage URI for Baton's Redis URL (memory without one)."""
    if redis_url.startswith(("redis://", "rediss://")):
        return f"baton+{redis_url}"
    return redis_url or "memory://"


def make_limiter() -> Limiter:
    """Flask-Limiter with the dialects' buckets; the user's and the organization's are
    counted by ``count_request_buckets``."""
    return Limiter(
        key_func=rate_limit_key, headers_enabled=True, application_limits=[*DIALECT_LIMITS]
    )


# -- the buckets every request has ---------------------------------------------------------


@dataclass(frozen=True)
class Bucket:
    """One of the buckets every request counts in: its limit, whose it is (``key_func``)
    and its scope. Shaped as Flask-Limiter's runtime limit where its 429 reads one."""

    limit: RateLimitItem
    key_func: Callable[[], str]
    scope: str
    error_message: None = None  # RateLimitExceeded's: the limit's own text


@lru_cache(maxsize=32)
def _buckets(scope: str, value: str) -> tuple[Bucket, ...]:
    """A configured value's buckets (``100 per minute;2000 per hour`` is two, as in
    Flask-Limiter), parsed once per value (Flask-Limiter parses its limits every request)."""
    key_func = organization_key if scope == "organization" else rate_limit_key
    try:
        items = parse_many(value) if value else []
    except ValueError:
        # As Flask-Limiter treats a limit it cannot read: logged, and not applied.
        log.error("rate limit %r for the %s bucket is not a limit: not applied", value, scope)
        return ()
    return tuple(Bucket(item, key_func, scope) for item in items)


def request_buckets() -> list[Bucket]:
    """The request's user buckets (anonymous: per IP) and, authenticated, its
    organization's, in Flask-Limiter's order: the shorter window first."""
    buckets = [*_buckets("user", user_limit())]
    if not _anonymous():
        buckets += _buckets("organization", organization_limit())
    return sorted(buckets, key=lambda bucket: bucket.limit)


# g's names: the request's own buckets as Flask-Limiter's request limits (the first names
# the headers); and that Flask-Limiter's middleware has nothing left to count.
OWN_LIMITS = "baton_own_limits"
_NOTHING_LEFT = "baton_limiter_middleware_skipped"


def _exempt(limiter: Limiter) -> bool:
    """Not counted: the limiter disabled, no route (404s), static files, or a route or
    blueprint given to ``limiter.exempt`` (health, metrics)."""
    endpoint = request.endpoint
    if not limiter.enabled or not endpoint or endpoint.rsplit(".", 1)[-1] == "static":
        return True
    scope = limiter.limit_manager.exemption_scope(current_app, endpoint, request.blueprint)
    return bool(scope & ExemptionScope.APPLICATION)


def count_request_buckets(limiter: Limiter) -> None:
    """A before_request hook, ahead of Flask-Limiter's: count the request in its user's and
    organization's buckets and spend its monthly quota (one script on Redis), and raise
    ``RateLimitExceeded`` for the first bucket over its limit. The headers then come from
    Flask-Limiter as for its own limits (``limiter.context``, set by ``install``'s header
    hook, or here for a 429)."""
    if _exempt(limiter):
        return
    from api.quotas import pending_spend  # it imports this module

    buckets = request_buckets()
    if not buckets:
        return
    prefix = [limiter._key_prefix] if limiter._key_prefix else []  # RATELIMIT_KEY_PREFIX
    args = [[*prefix, bucket.key_func(), bucket.scope] for bucket in buckets]
    storage = limiter.storage
    counts: list[int] = []
    fallback = storage.fallback if isinstance(storage, CountingRedisStorage) else None
    if fallback is not None and not fallback.active():
        spend = pending_spend()
        try:
            counts, spent = storage.count_buckets(
                [(b.limit.key_for(*a), b.limit) for b, a in zip(buckets, args, strict=True)],
                spend,
            )
        except redis.RedisError as error:
            fallback.fail(error)
        else:
            if spent is not None:
                setattr(g, SPENT_BY_LIMITER, (spend, spent))
    if not counts:  # the memory storage (no Redis), or the fallback
        strategy = fallback.limiter if fallback is not None else limiter.limiter
        for bucket, bucket_args in zip(buckets, args, strict=True):
            key = bucket.limit.key_for(*bucket_args)
            allowed = strategy.hit(bucket.limit, *bucket_args)
            counts.append(strategy.storage.get(key))
            if fallback is not None:  # the headers read this count, not Redis's
                remember_count(key, counts[-1], strategy.storage.get_expiry(key))
            if not allowed:
                break
    own = [
        RequestLimit(limiter, bucket.limit, bucket_args, count > bucket.limit.amount, True)
        for bucket, bucket_args, count in zip(buckets, args, counts, strict=False)
    ]
    setattr(g, OWN_LIMITS, own)
    if own[-1].breached:
        # The 429's handler and headers read the breached bucket from the context.
        limiter.context.view_rate_limit = own[-1]
        limiter.context.view_rate_limits = own
        raise RateLimitExceeded(buckets[len(own) - 1])  # type: ignore[arg-type]
    # Without a dialect Flask-Limiter's middleware would count nothing: skip it.
    setattr(g, _NOTHING_LEFT, compat_registry.current() is None)


def _skipped_by_baton() -> bool:
    """Flask-Limiter's request filter: true once, for its middleware's look at a request
    that ``count_request_buckets`` has fully counted; a route's own limits (checked by its
    decorator, later in the same request) are still counted."""
    return bool(g.pop(_NOTHING_LEFT, False))


_filtered_limiters: weakref.WeakSet[Limiter] = weakref.WeakSet()


def install_buckets(app: Flask, limiter: Limiter) -> None:
    """Call before ``limiter.init_app``: the buckets are counted before its own limits."""

    @app.before_request
    def _count_request_buckets() -> None:
        count_request_buckets(limiter)

    if limiter not in _filtered_limiters:  # one extension serves every app (tests make many)
        limiter.request_filter(_skipped_by_baton)
        _filtered_limiters.add(limiter)


def retry_after_seconds(limiter: Limiter) -> int:
    """Seconds until the breached window resets (at least 1)."""
    current = limiter.current_limit
    if current is None:
        return 1
    # reset_at is rounded up to a whole second: never say more than the window itself.
    window = current.limit.get_expiry()
    return min(window, max(1, math.ceil(current.reset_at - time.time())))


def install(app: Flask, limiter: Limiter) -> None:
    """The 429 body and seed 003's ``X-RateLimit-Window`` header."""

    @app.errorhandler(RateLimitExceeded)
    def _too_many(error: RateLimitExceeded) -> Response:
        retry_after = retry_after_seconds(limiter)
        g.rate_limit_retry_after = retry_after
        limit = error.limit.limit
        response = error_response(
            429,
            f"Rate limit exceeded ({limit}). Try again in {retry_after} seconds.",
            [
                {
                    "retry_after": retry_after,
                    "limit": limit.amount,
                    "window_seconds": limit.get_expiry(),
                    "scope": error.limit.scope if isinstance(error.limit.scope, str) else None,
                }
            ],
            "RATE_LIMIT_EXCEEDED",
        )
        response.headers["Retry-After"] = str(retry_after)
        return response

    @app.after_request
    def _window_header(response: Response) -> Response:
        # Runs before Flask-Limiter's own header hook (registered earlier): under a
        # dialect the headers name the dialect's own bucket with the fewest left (its
        # document's limit, e.g. 50/minute or seed 003's tier per hour), else Baton's.
        current = limiter.current_limit
        own_limits = g.get(OWN_LIMITS, [])
        if current is None and own_limits:
            # Flask-Limiter counted nothing of its own: the headers are the request's own
            # buckets' (the first, as Flask-Limiter picks among unbreached limits).
            limiter.context.view_rate_limit = current = own_limits[0]
            limiter.context.view_rate_limits = own_limits
        dialect = compat_registry.current()
        if current is not None and not current.breached and dialect is not None:
            counted = [*limiter.current_limits]
            counted += [lim for lim in own_limits if lim not in counted]
            own = [lim for lim in counted if "dialect-" in lim.key or dialect.name in lim.key]
            tightest = min(own or counted, key=lambda lim: lim.remaining)
            if tightest is not None:
                limiter.context.view_rate_limit = tightest
                current = tightest
        elif current is None and dialect is not None and limiter.enabled:
            current = _peek_dialect_limit(limiter)
            limiter.context.view_rate_limit = current
        if current is not None:
            response.headers["X-RateLimit-Window"] = str(current.limit.get_expiry())
        return response
