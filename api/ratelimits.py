"""Rate limits (Flask-Limiter): who is counted, in which bucket, and how a 429 reads.

Buckets (issue 9, seeds 002/003/004):
- one per user across every route (an application limit; anonymous callers by IP),
- one per organization across every route and user (a second application limit),
- per endpoint where a seed sets one (builds 10/min, analyses 5/min per user),
- sign-in and sign-up per client IP.
Every key lives under ``<BATON_REDIS_PREFIX>:ratelimit:`` in Redis.
"""

from __future__ import annotations

import math
import time

from flask import Flask, Response, current_app, g, has_request_context, request
from flask_limiter import ApplicationLimit, Limiter, RateLimitExceeded, RequestLimit
from flask_limiter.util import get_remote_address
from limits.storage import RedisStorage

from api.compat import registry as compat_registry
from api.errors import error_response
from orchestration import quotas
from orchestration.errors import DomainError


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

# g's name for a quota spend made by the organization bucket's script: (PendingSpend, Spend),
# taken by api/quotas.py's hook, or given back at the request's teardown.
SPENT_BY_LIMITER = "baton_quota_spent"


class CountingRedisStorage(RedisStorage):
    """limits' Redis storage (``baton+redis://`` for Flask-Limiter's storage URI) whose
    increment also answers the key's time to live, kept for the rest of the request.

    A request hits each of its limits once (a Lua INCRBY+EXPIRE, as limits' own script),
    then its ``X-RateLimit-*`` headers ask the limit's window: a GET and a TTL, two more
    round trips for what the increment has just said. Here ``get`` and ``get_expiry``
    of a key this request incremented answer from that increment; any other key (or
    outside a request) reads Redis as before. Counting, keys and expiry are unchanged.

    The increment of the request's organization bucket also spends the request's monthly
    quota in the same script (api/quotas.py takes the answer; a spend the request then
    does not use is given back at its teardown).
    """

    STORAGE_SCHEME = ["baton+redis", "baton+rediss"]
    _INCR_EXPIRE_TTL = """
local amount = tonumber(ARGV[2])
local current = redis.call("incrby", KEYS[1], amount)
if tonumber(current) == amount then
    redis.call("expire", KEYS[1], ARGV[1])
end
"""
    SCRIPT_INCR_EXPIRE_TTL = _INCR_EXPIRE_TTL + 'return {current, redis.call("ttl", KEYS[1])}'
    # KEYS[2] the quota's counter; ARGV[3], ARGV[4] its limit and expiry (orchestration.quotas).
    SCRIPT_INCR_EXPIRE_TTL_SPEND = (
        quotas.SPEND_FUNCTION
        + _INCR_EXPIRE_TTL
        + """
local spent = spend_quota(KEYS[2], tonumber(ARGV[3]), ARGV[4])
return {current, redis.call("ttl", KEYS[1]), spent[1], spent[2]}
"""
    )

    def __init__(self, uri: str, **options) -> None:  # type: ignore[no-untyped-def]
        super().__init__(uri.removeprefix("baton+"), **options)

    def initialize_storage(self, uri: str) -> None:
        super().initialize_storage(uri)
        self.lua_incr_expire_ttl = self.get_connection().register_script(
            self.SCRIPT_INCR_EXPIRE_TTL
        )
        self.lua_incr_expire_ttl_spend = self.get_connection().register_script(
            self.SCRIPT_INCR_EXPIRE_TTL_SPEND
        )

    @staticmethod
    def _seen() -> dict[str, tuple[int, float]] | None:
        """This request's increments: key -> (count, expiry as a timestamp)."""
        if not has_request_context():
            return None
        return g.setdefault("baton_rate_counts", {})

    def incr(self, key: str, expiry: int, amount: int = 1) -> int:
        spend = _quota_spend_for(key)
        if spend is None:
            current, ttl = self.lua_incr_expire_ttl([self.prefixed_key(key)], [expiry, amount])
        else:
            current, ttl, allowed, used = self.lua_incr_expire_ttl_spend(
                [self.prefixed_key(key), spend.key], [expiry, amount, *spend.args()]
            )
            g.setdefault(SPENT_BY_LIMITER, (spend, spend.result(allowed, used)))
        seen = self._seen()
        if seen is not None:
            seen[key] = (int(current), max(int(ttl), 0) + time.time())
        return int(current)

    def get(self, key: str) -> int:
        seen = self._seen()
        if seen is not None and key in seen:
            return seen[key][0]
        return super().get(key)

    def get_expiry(self, key: str) -> float:
        seen = self._seen()
        if seen is not None and key in seen:
            return seen[key][1]
        return super().get_expiry(key)


def _quota_spend_for(key: str) -> quotas.PendingSpend | None:
    """The request's quota spend if ``key`` is its organization's bucket (limits' key:
    ``LIMITER/<prefix>/org:<id>/organization/<amount>/...``) and it spends quota and has
    not yet; else None."""
    if not has_request_context() or SPENT_BY_LIMITER in g:
        return None
    organization = organization_key()
    if not organization or f"/{organization}/organization/" not in key:
        return None
    from api.quotas import pending_spend  # it imports this module

    return pending_spend()


def storage_uri(redis_url: str) -> str:
    """Flask-Limiter's storage URI for Baton's Redis URL (memory without one)."""
    if redis_url.startswith(("redis://", "rediss://")):
        return f"baton+{redis_url}"
    return redis_url or "memory://"


def make_limiter() -> Limiter:
    return Limiter(
        key_func=rate_limit_key,
        headers_enabled=True,
        application_limits=[
            ApplicationLimit(user_limit, key_function=rate_limit_key, scope="user"),
            ApplicationLimit(
                organization_limit,
                key_function=organization_key,
                scope="organization",
                exempt_when=_anonymous,
            ),
            *DIALECT_LIMITS,
        ],
    )


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
        dialect = compat_registry.current()
        if current is not None and not current.breached and dialect is not None:
            own = [
                lim
                for lim in limiter.current_limits
                if "dialect-" in lim.key or dialect.name in lim.key
            ]
            tightest = min(own or limiter.current_limits, key=lambda lim: lim.remaining)
            if tightest is not None:
                limiter.context.view_rate_limit = tightest
                current = tightest
        elif current is None and dialect is not None and limiter.enabled:
            current = _peek_dialect_limit(limiter)
            limiter.context.view_rate_limit = current
        if current is not None:
            response.headers["X-RateLimit-Window"] = str(current.limit.get_expiry())
        return response
