"""Seed 001, the multi-agent command center, at /compat/command-center/api/v1.

Its errors nest ``{"error": {code, message, details, request_id}}`` with the document's
codes (``UNAUTHORIZED`` where Baton says ``AUTHENTICATION_REQUIRED``); its lists are
``items`` + ``total``/``page``/``pages`` (messages: ``before`` cursor + ``has_more``);
money is a JSON number. Its Socket.IO stays at ``/socket.io`` (api/streams).
"""

from __future__ import annotations

from typing import Any, ClassVar

from marshmallow import Schema, fields

from api.compat.core import Dialect, Problem

# Baton's codes -> the document's "Common codes" (the rest are Baton's, same spelling).
ERROR_CODES = {
    "AUTHENTICATION_REQUIRED": "UNAUTHORIZED",
}


class CommandCenterErrorBodySchema(Schema):
    code = fields.String(
        required=True,
        metadata={
            "description": "UNAUTHORIZED, FORBIDDEN, RESOURCE_NOT_FOUND, VALIDATION_ERROR, "
            "BUDGET_EXCEEDED, AGENT_BUSY, GITHUB_API_ERROR, CONFLICT, RATE_LIMIT_EXCEEDED, ..."
        },
    )
    message = fields.String(required=True)
    details = fields.Dict(
        required=True, metadata={"description": "For invalid input: {field: [messages]}."}
    )
    request_id = fields.String(required=True)


class CommandCenterErrorSchema(Schema):
    """Seed 001's error format."""

    error = fields.Nested(CommandCenterErrorBodySchema, required=True)


def _details(problem: Problem) -> dict[str, Any]:
    """The document's ``details`` is an object: field -> its messages (or Baton's own
    object, as is)."""
    if isinstance(problem.details, dict):
        return problem.details
    out: dict[str, list[str]] = {}
    for item in problem.field_messages:
        out.setdefault(str(item["field"]), []).append(str(item["message"]))
    return out


class CommandCenter(Dialect):
    name = "command_center"
    tag = "Dialect: seed 001 command center"
    description = "Seed 001 (multi-agent command center API) exactly as documented."
    base = "/compat/command-center/api/v1"
    error_schema = CommandCenterErrorSchema
    # "Authenticated: 100 requests per minute per IP" (its WebSocket's 100 messages a
    # minute per connection are api/streams/sockets.py's).
    rate_limits: ClassVar[dict[str, str]] = {"ip": "100 per minute"}

    def error_body(self, problem: Problem) -> dict[str, Any]:
        return {
            "error": {
                "code": ERROR_CODES.get(problem.code, problem.code),
                "message": problem.summary(),
                "details": _details(problem),
                "request_id": problem.request_id,
            }
        }


DIALECT = CommandCenter()
