"""Seed 003's monthly API quota at the edge: each authenticated request spends one call of
its organization's quota; a spent quota is a 429 ``QUOTA_EXCEEDED`` until the next UTC
month. Reading ``/organizations/current`` (to see the quota) and the auth routes (to sign
out) are free."""

from __future__ import annotations

import math
from datetime import UTC, datetime

from flask import Flask, g, request

from api.ratelimits import authenticated_principal
from orchestration import quotas
from orchestration.errors import QuotaExceeded

FREE_ENDPOINTS = {("GET", "organizations.CurrentOrganization")}


def install(app: Flask) -> None:
    # Registered after the limiter's own hook: a rate-limited request spends no quota.
    @app.before_request
    def _spend_quota() -> None:
        if request.blueprint == "auth" or (request.method, request.endpoint) in FREE_ENDPOINTS:
            return
        principal = authenticated_principal()
        if principal is None:
            return
        spent = quotas.spend(principal.organization_id, limit=g.live_session.api_quota_limit)
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
