"""Seed 002, "Task Assistant": at /compat/task-assistant/api/v1, FastAPI-style errors."""

from __future__ import annotations

import re
from typing import Any, ClassVar

from flask import request
from marshmallow import Schema, fields

from api.compat.core import Dialect, Problem, StatusWords, timestamp

# Baton's job states -> the document's task words (it names pending, completed, failed).
STATUS_WORDS = StatusWords(
    {
        "pending": "pending",
        "queued": "pending",
        "running": "in_progress",
        "paused": "in_progress",
        "completed": "completed",
        "failed": "failed",
        "cancelled": "cancelled",
    }
)
# The document's priorities are low, medium, high: Baton's ``urgent`` reads as high.
PRIORITY_WORDS = {"low": "low", "medium": "medium", "high": "high", "urgent": "high"}

# marshmallow's messages -> pydantic's (msg, type), as a FastAPI client reads them.
PYDANTIC = {
    "Missing data for required field.": ("field required", "value_error.missing"),
    "Not a valid email address.": ("value is not a valid email address", "value_error.email"),
    "Unknown field.": ("extra fields not permitted", "value_error.extra"),
    "Field may not be null.": ("none is not an allowed value", "type_error.none.not_allowed"),
    "Not a valid string.": ("str type expected", "type_error.str"),
    "Not a valid integer.": ("value is not a valid integer", "type_error.integer"),
    "Not a valid number.": ("value is not a valid float", "type_error.float"),
    "Not a valid boolean.": ("value could not be parsed to a boolean", "type_error.bool"),
    "Not a valid UUID.": ("value is not a valid uuid", "type_error.uuid"),
    "Not a valid datetime.": ("invalid datetime format", "value_error.datetime"),
    "Not a valid mapping type.": ("value is not a valid dict", "type_error.dict"),
    "Not a valid list.": ("value is not a valid list", "type_error.list"),
    "Not a valid URL.": ("invalid or missing URL scheme", "value_error.url"),
}


def _loc(field: str) -> list[str | int]:
    where = "query" if request.method == "GET" else "body"
    parts = [] if field in ("_body", "_schema") else field.split(".")
    return [where, *(int(p) if p.isdigit() else p for p in parts)]


def _pydantic(message: str) -> tuple[str, str]:
    if message in PYDANTIC:
        return PYDANTIC[message]
    if message.startswith("Must be one of"):
        return message, "type_error.enum"
    if re.match(r"(Length|Must be greater|Must be less|Must be at)", message):
        return message, "value_error.const"
    return message, "value_error"


def validation_detail(problem: Problem) -> list[dict[str, Any]]:
    out = []
    for item in problem.field_messages:
        msg, kind = _pydantic(item["message"])
        out.append({"loc": _loc(item["field"]), "msg": msg, "type": kind})
    return out


class TaskAssistantErrorSchema(Schema):
    """Seed 002's errors: ``detail`` is a message, or for a 422 the list of
    ``{loc, msg, type}`` (FastAPI's validation errors)."""

    detail = fields.Raw(
        required=True,
        metadata={
            "description": "A message; for 422, a list of {loc, msg, type}.",
            "oneOf": [
                {"type": "string"},
                {
                    "type": "array",
                    "items": {
                        "type": "object",
                        "properties": {
                            "loc": {"type": "array", "items": {}},
                            "msg": {"type": "string"},
                            "type": {"type": "string"},
                        },
                    },
                },
            ],
        },
    )
    error_code = fields.String(metadata={"description": "VALIDATION_ERROR, ..."})
    timestamp = fields.String()
    retry_after = fields.Integer(metadata={"description": "On 429: seconds to wait."})


class TaskAssistant(Dialect):
    name = "task_assistant"
    tag = "Dialect: seed 002 Task Assistant"
    description = "Seed 002 (Task Assistant AI SaaS API) exactly as documented."
    base = "/compat/task-assistant/api/v1"
    error_schema = TaskAssistantErrorSchema
    # "Rate limits are enforced per tenant and per user": tenant 100/minute and
    # 1,000/hour, user 50/minute; "auth": its auth endpoints' 10 per 15 minutes, one
    # bucket per client address over /auth/register, /auth/login and /auth/refresh
    # (routes.auth_attempts).
    rate_limits: ClassVar[dict[str, str]] = {
        "organization": "100 per minute;1000 per hour",
        "user": "50 per minute",
        "auth": "10 per 15 minutes",
    }

    def error_body(self, problem: Problem) -> dict[str, Any]:
        body: dict[str, Any]
        if problem.code == "RATE_LIMIT_EXCEEDED":
            retry = _retry_after(problem)
            body = {
                "detail": f"Rate limit exceeded. Try again in {retry} seconds.",
                "retry_after": retry,
            }
        elif problem.status == 422 and problem.field_messages:
            body = {"detail": validation_detail(problem)}
        else:
            body = {"detail": problem.summary()}
        return {**body, "error_code": problem.code, "timestamp": timestamp()}


def _retry_after(problem: Problem) -> int:
    details = problem.details if isinstance(problem.details, list) else []
    for item in details:
        if isinstance(item, dict) and isinstance(item.get("retry_after"), int):
            return item["retry_after"]
    return 60


DIALECT = TaskAssistant()
