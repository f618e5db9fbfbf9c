"""Seed 004, "Phase 2" builds: at /compat/phase2 and at the root (/api/build/, /auth/login)."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from flask import request
from marshmallow import Schema, fields

from api.compat.core import Dialect, Problem, StatusWords, timestamp
from orchestration.principal import Principal

# Baton's codes -> the document's ``error`` words.
ERROR_WORDS = {
    "VALIDATION_ERROR": "validation_error",
    "AUTHENTICATION_REQUIRED": "unauthorized",
    "FORBIDDEN": "forbidden",
    "RESOURCE_NOT_FOUND": "not_found",
    "CONFLICT": "conflict",
    "RATE_LIMIT_EXCEEDED": "rate_limit_exceeded",
}

STATUS_WORDS = StatusWords(
    {
        "pending": "initializing",
        "queued": "initializing",
        "running": "running",
        "paused": "running",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }
)

# The document's roles: admin, user (members and managers), viewer.
ROLE_WORDS = {"admin": "admin", "manager": "user", "member": "user", "viewer": "viewer"}
# Its permissions, from what the role may do in Baton.
PERMISSION_WORDS = {
    "job:create": ("build:create", "analysis:create"),
    "job:read": ("build:read", "analysis:read"),
    "job:cancel": ("build:cancel",),
}


def may_view(principal: Principal, created_by_id: uuid.UUID | None) -> bool:
    """ "Users can only view their own builds; admins can view any": the creator, or a
    role that may act on anyone's jobs (admins and managers), over REST and WebSocket."""
    return created_by_id == principal.user_id or principal.can("job:cancel_any")


def present_results(result: dict[str, Any] | None) -> dict[str, Any] | None:
    """A build's result with the document's ``generated_files`` (its components)."""
    if not result or "components" not in result:
        return result
    files = [c.get("component") for c in result.get("components") or [] if isinstance(c, dict)]
    return {"generated_files": files, **result}


class Phase2ErrorSchema(Schema):
    """Seed 004's error format."""

    error = fields.String(required=True, metadata={"description": "validation_error, ..."})
    detail = fields.String(required=True)
    status_code = fields.Integer(required=True)
    timestamp = fields.String(required=True)


class Phase2(Dialect):
    name = "phase2"
    tag = "Dialect: seed 004 Phase 2 builds"
    description = "Seed 004 (Phase 2 build API) exactly as documented; also at the root."
    base = "/compat/phase2"
    # "All endpoints are rate limited per user: Global 60 requests/minute" (build creation
    # 10/min and analysis 5/min are the canonical buckets, shared with /api/v1).
    rate_limits: ClassVar[dict[str, str]] = {"user": "60 per minute"}
    root_prefixes: ClassVar[tuple[str, ...]] = (
        "/auth/login",
        "/api/build/",
        "/api/analysis/",
        "/api/health/",
    )
    # FastAPI's HTTPBearer: no credentials at all is "403 Not authenticated" (the
    # document's POST /api/build/ errors); a bad or expired token is 401.
    auth_statuses: ClassVar[tuple[int, ...]] = (401, 403)
    error_schema = Phase2ErrorSchema

    def status_for(self, problem: Problem) -> int:
        # Signing in needs no token: its wrong password is the document's 401.
        if problem.code == "AUTHENTICATION_REQUIRED" and _no_credentials() and not _signing_in():
            return 403
        return super().status_for(problem)

    def error_body(self, problem: Problem) -> dict[str, Any]:
        if problem.code == "AUTHENTICATION_REQUIRED" and problem.status == 403:
            word, detail = "not_authenticated", "Not authenticated"
        elif problem.code == "RATE_LIMIT_EXCEEDED":
            word, detail = "rate_limit_exceeded", "Too many requests"
        else:
            word = ERROR_WORDS.get(problem.code, problem.code.lower())
            detail = problem.summary()
        return {
            "error": word,
            "detail": detail,
            "status_code": problem.status,
            "timestamp": timestamp(),
        }


def _signing_in() -> bool:
    return request.path.rstrip("/").endswith("/auth/login")


def _no_credentials() -> bool:
    return not request.headers.get("Authorization") and not request.args.get("token")


DIALECT = Phase2()
