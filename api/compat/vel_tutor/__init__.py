"""Seed 000, vel_tutor's main backend: at /compat/vel-tutor/api/v1."""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema, fields

from api.compat.core import Dialect, Problem, StatusWords, timestamp

# The document's codes (its "Common Error Codes"), and Baton's others as they are.
CODES = {
    "AUTHENTICATION_REQUIRED": "AUTHENTICATION_REQUIRED",
    "FORBIDDEN": "UNAUTHORIZED",  # the document's 403
    "VALIDATION_ERROR": "VALIDATION_ERROR",
    "RESOURCE_NOT_FOUND": "NOT_FOUND",
    "RATE_LIMIT_EXCEEDED": "RATE_LIMIT_EXCEEDED",
}

STATUS_WORDS = StatusWords(
    {
        "pending": "pending",
        "queued": "pending",
        "paused": "pending",
        "running": "in_progress",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }
)

# The document knows two roles: admin and user (Baton's manager, member and viewer).
ROLE_WORDS = {"admin": "admin", "manager": "user", "member": "user", "viewer": "user"}
ROLES_BY_WORD = {"admin": "admin", "user": "member"}


class VelTutorErrorDetailSchema(Schema):
    field = fields.String()
    message = fields.String()


class VelTutorErrorSchema(Schema):
    """Seed 000's standard error format."""

    error = fields.String(required=True)
    code = fields.String(required=True)
    details = fields.List(fields.Nested(VelTutorErrorDetailSchema))
    timestamp = fields.String()


class VelTutor(Dialect):
    name = "vel_tutor"
    tag = "Dialect: seed 000 vel_tutor"
    description = "Seed 000 (vel_tutor main backend) exactly as documented."
    base = "/compat/vel-tutor/api/v1"
    # "VALIDATION_ERROR (400) - Request validation failed": every invalid input, NUL too.
    status_map: ClassVar[dict[int, int]] = {422: 400}
    error_schema = VelTutorErrorSchema
    # "Rate Limiting: 100 requests/hour (authenticated), 5 auth attempts/minute": the
    # hourly bucket is per user and counts authenticated requests only (login and the
    # public health check are not); the 5 logins a minute per IP are the login bucket
    # every login route shares (routes.Login, BATON_LOGIN_RATE_LIMIT).
    rate_limits: ClassVar[dict[str, str]] = {"user": "100 per hour"}

    def rate_limit(self, kind: str) -> str | None:
        """The per-user bucket counts authenticated requests only (the document's words)."""
        limit = super().rate_limit(kind)
        if kind == "user" and limit:
            from api.ratelimits import authenticated_principal

            if authenticated_principal() is None:
                return None
        return limit

    def error_body(self, problem: Problem) -> dict[str, Any]:
        details = [
            {"field": d["field"], "message": str(d.get("message", ""))}
            for d in problem.field_messages
        ]
        message = "Validation failed" if problem.code == "VALIDATION_ERROR" else problem.message
        return {
            "error": message,
            "details": details,
            "code": CODES.get(problem.code, problem.code),
            "timestamp": timestamp(),
        }


DIALECT = VelTutor()
