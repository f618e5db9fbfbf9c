"""Seed 003, "AI Orchestrator Platform": its document at /compat/orchestrator/v1.

Its errors nest like Baton's (``{"error": {code, message, details, request_id,
timestamp}}``) with the document's codes and statuses: ``INSUFFICIENT_PERMISSIONS`` for a
403, ``QUOTA_EXCEEDED`` (429) for a spent budget limit as for the monthly API quota, and
the statuses its section 3.2 lists (a 405 is a 404; the edge's 413/414/415 stay, coded
``VALIDATION_ERROR``). See
docs/dialects-orchestrator.md for every choice where the document is silent.
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema, fields

from api.compat.core import Dialect, Problem, StatusWords, timestamp

# Section 4.2's tiers (requests an hour, per organization).
TIER_LIMITS = {
    "free": "100 per hour",
    "pro": "1000 per hour",
    "enterprise": "10000 per hour",
}

# Baton's codes -> the document's (section 3.3); the rest keep Baton's.
ERROR_CODES = {
    "FORBIDDEN": "INSUFFICIENT_PERMISSIONS",
    "BUDGET_EXCEEDED": "QUOTA_EXCEEDED",
    "PAYLOAD_TOO_LARGE": "VALIDATION_ERROR",
    "URI_TOO_LONG": "VALIDATION_ERROR",
    "UNSUPPORTED_MEDIA_TYPE": "VALIDATION_ERROR",
    "METHOD_NOT_ALLOWED": "RESOURCE_NOT_FOUND",
    "SERVICE_UNAVAILABLE": "INTEGRATION_ERROR",
}

# A run's words: ``started`` until a worker picks it up (the POST /orchestrate answer),
# then ``running``; a paused run is still under way.
STATUS_WORDS = StatusWords(
    {
        "pending": "started",
        "queued": "started",
        "running": "running",
        "paused": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }
)


class OrchestratorErrorBodySchema(Schema):
    code = fields.String(
        required=True,
        metadata={
            "description": "VALIDATION_ERROR, AUTHENTICATION_REQUIRED, INSUFFICIENT_PERMISSIONS, "
            "RESOURCE_NOT_FOUND, RATE_LIMIT_EXCEEDED, QUOTA_EXCEEDED, ..."
        },
    )
    message = fields.String(required=True)
    details = fields.List(
        fields.Dict(), required=True, metadata={"description": "{field, message}"}
    )
    request_id = fields.String(required=True)
    timestamp = fields.String(required=True)


class OrchestratorErrorSchema(Schema):
    """Seed 003's error response format (section 3.1)."""

    error = fields.Nested(OrchestratorErrorBodySchema, required=True)


class Orchestrator(Dialect):
    name = "orchestrator"
    tag = "Dialect: seed 003 AI Orchestrator"
    description = "Seed 003 (AI Orchestrator Platform API) exactly as documented."
    base = "/compat/orchestrator/v1"
    # 413, 414 and 415 keep their HTTP statuses (as in every dialect and the canonical API:
    # the edge answers them before any route), with the document's VALIDATION_ERROR code.
    status_map: ClassVar[dict[int, int]] = {402: 429, 405: 404}
    error_schema = OrchestratorErrorSchema

    def rate_limit(self, kind: str) -> str | None:
        """Section 4.2: per organization, per hour, by its subscription tier (an unknown
        tier, e.g. "custom" before its limits are negotiated, counts as free). Config
        ``BATON_DIALECT_RATE_LIMITS`` may still set any bucket."""
        configured = super().rate_limit(kind)
        if configured or kind != "organization":
            return configured
        from flask import current_app, g

        from api.ratelimits import authenticated_principal
        from api.security import sessions
        from orchestration import accounts

        principal = authenticated_principal()
        if principal is None:
            return None
        if "orchestrator_tier" not in g:
            g.orchestrator_tier = accounts.subscription_tier(
                sessions(), organization_id=principal.organization_id
            )
        tiers = current_app.config.get("BATON_ORCHESTRATOR_TIER_LIMITS") or TIER_LIMITS
        return tiers.get(g.orchestrator_tier, tiers["free"])

    def error_body(self, problem: Problem) -> dict[str, Any]:
        return {
            "error": {
                "code": ERROR_CODES.get(problem.code, problem.code),
                "message": problem.message,
                "details": [
                    {"field": str(d["field"]), "message": str(d.get("message", ""))}
                    for d in problem.field_messages
                ],
                "request_id": problem.request_id,
                "timestamp": timestamp(),
            }
        }


DIALECT = Orchestrator()
