"""Seed 003's monthly API quota at the edge: each authenticated request spends one call of
its organization's quota; a spent quota is a 429 ``QUOTA_EXCEEDED`` until the next UTC
month. Reading ``/organizations/current`` (to see the quota) and the auth routes (to sign
out) are free.

On Redis the spend rides along with the count of the request's rate-limit buckets (one
script, one round trip: api/ratelimits.py ``count_request_buckets``), which runs before
this module's hook and spends nothing for a request a bucket refuses; a request then
refused (by a dialect's limit, or stopped before this hook) gets its spend back at
teardown. Otherwise the hook spends it itself."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flask import Flask, g, request

from api.ratelimits import SPENT_BY_LIMITER, authenticated_principal
from orchestration import quotas
from orchestration.errors import QuotaExceeded

FREE_ENDPOINTS = {("GET", "organizations.CurrentOrganization")}


def pending_spend() -> quotas.PendingSpend | None:
    """The request's spend, if it makes one (an authenticated request to a route that
    is not free)."""
    if request.blueprint == "auth" or (request.method, request.endpoint) in FREE_ENDPOINTS:
        return None
    principal = authenticated_principal()
    if principal is None:
        return None
    return quotas.pending_spend(principal.organization_id, limit=g.live_session.api_quota_limit)


def install(app: Flask) -> None:
    # Registered after the limiter's own hook: a rate-limited request spends no quota.
    @app.before_request
    def _spend_quota() -> None:
        taken = g.pop(SPENT_BY_LIMITER, None)
        if taken is not None:
            spent = taken[1]
        else:
            pending = pending_spend()
            if pending is None:
                return
            spent = quotas.spend_pending(pending)
        if not spent.allowed:
            wait = math.ceil((spent.resets_at - datetime.now(UTC)).total_seconds())
            raise QuotaExceeded(
                f"The organization's monthly API quota ({spent.limit} calls) is spent; "
                f"it resets at {spent.resets_at.isoformat().replace('+00:00', 'Z')}",
                [
                    {
                        "api_quota_limit": spent.limit,
                        "api_quota_used": spent.used,
                        "resets_at": spent.resets_at.isoformat().replace("+00:00", "Z"),
                        "retry_after": wait,
                    }
                ],
                retry_after=max(1, wait),
            )

    @app.teardown_request
    def _refund_unused_spend(_exc: BaseException | None) -> None:
        # Still here: the buckets' script spent it, and the request was refused before
        # this module's hook took it (a dialect's limit, counted after Baton's buckets).
        taken = g.pop(SPENT_BY_LIMITER, None)
        if taken is not None and taken[1].allowed:
            quotas.refund(taken[0])
