"""One error envelope for every 4xx/5xx: {"error": {code, message, details, request_id}}.

No stack trace leaves: unexpected exceptions are logged with the request id and answered
with a generic 500.
"""

from __future__ import annotations

import logging
from typing import Any

import kombu.exceptions
import redis.exceptions
import sqlalchemy.exc
from flask import Flask, Response, jsonify
from werkzeug.exceptions import HTTPException

from api.common.edge import request_id
from api.compat import registry as compat_registry
from baton.settings import get_settings
from models.base import utcnow
from orchestration.errors import DomainError

# A dependency that cannot be reached (PostgreSQL, the broker, Redis) is a 503 the client
# can retry, never a 500: connection refused or reset, a pool or socket timeout.
UNAVAILABLE = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,
    kombu.exceptions.OperationalError,
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
)

log = logging.getLogger(__name__)

CODE_BY_STATUS = {
    400: "VALIDATION_ERROR",
    401: "AUTHENTICATION_REQUIRED",
    402: "BUDGET_EXCEEDED",
    403: "FORBIDDEN",
    404: "RESOURCE_NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    414: "URI_TOO_LONG",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMIT_EXCEEDED",
    500: "INTERNAL_SERVER_ERROR",
    503: "SERVICE_UNAVAILABLE",
}


def error_response(
    status: int, message: str, details: Any = None, code: str | None = None
) -> Response:
    """The canonical envelope, or, for a request under a seed dialect, that document's
    error shape and status (``api.compat``): every error path goes through here."""
    dialect = compat_registry.current()
    if dialect is not None:
        from api.compat.core import Problem

        problem = Problem(
            status=status,
            code=code or CODE_BY_STATUS.get(status, "ERROR"),
            message=message,
            details=details if details is not None else [],
            request_id=request_id(),
        )
        try:
            return dialect.respond(problem)
        except Exception:  # a dialect's bug must not turn a 4xx into a 500
            log.exception("dialect %s could not shape a %s error", dialect.name, status)
    body = {
        "error": {
            "code": code or CODE_BY_STATUS.get(status, "ERROR"),
            "message": message,
            "details": details if details is not None else [],
            "request_id": request_id(),
            "timestamp": utcnow().isoformat().replace("+00:00", "Z"),
        }
    }
    response = jsonify(body)
    response.status_code = status
    return response


def _flatten_messages(messages: Any, prefix: str = "") -> list[dict[str, str]]:
    """webargs/marshmallow {"json": {"field": ["msg"]}} -> [{"field", "message"}]."""
    out: list[dict[str, str]] = []
    if isinstance(messages, dict):
        for key, value in messages.items():
            if not prefix and key in {"json", "query", "path", "headers", "form", "files"}:
                out.extend(_flatten_messages(value, ""))
                continue
            name = f"{prefix}.{key}" if prefix else str(key)
            out.extend(_flatten_messages(value, name))
    elif isinstance(messages, list):
        if all(isinstance(m, str) for m in messages):
            out.extend({"field": prefix or "_body", "message": m} for m in messages)
        else:
            for item in messages:
                out.extend(_flatten_messages(item, prefix))
    else:
        out.append({"field": prefix or "_body", "message": str(messages)})
    return out


def handle_http_exception(error: HTTPException) -> Response:
    status = error.code or 500
    data = getattr(error, "data", None) or {}
    if "messages" in data:
        message = (
            "The request body is not valid JSON"
            if status == 400
            else ("The request contains invalid data")
        )
        return error_response(status, message, _flatten_messages(data["messages"]))
    if status >= 500:
        log.error("request %s failed with %s", request_id(), status)
        return error_response(status, "An unexpected error occurred")
    message = data.get("message") or error.description or error.name
    response = error_response(status, message, data.get("details"))
    if status == 429 and (retry_after := _retry_after(error)):
        response.headers["Retry-After"] = retry_after
    return response


def _retry_after(error: HTTPException) -> str | None:
    """Flask-Limiter puts the window's reset on its RateLimitExceeded response."""
    original = getattr(error, "response", None)
    return original.headers.get("Retry-After") if original is not None else None


def handle_domain_error(error: DomainError) -> Response:
    response = error_response(error.status, error.message, error.details, error.code)
    retry_after = getattr(error, "retry_after", None)
    if retry_after is not None:
        response.headers["Retry-After"] = str(retry_after)
    elif error.status == 503:
        response.headers["Retry-After"] = str(get_settings().unavailable_retry_after)
    return response


def handle_unavailable(error: Exception) -> Response:
    log.warning("request %s: a dependency is unavailable: %s", request_id(), type(error).__name__)
    response = error_response(
        503, "A service Baton depends on is unavailable; retry shortly", code="SERVICE_UNAVAILABLE"
    )
    response.headers["Retry-After"] = str(get_settings().unavailable_retry_after)
    return response


def handle_unexpected(error: Exception) -> Response:
    if isinstance(error, HTTPException):
        return handle_http_exception(error)
    if isinstance(error, UNAVAILABLE):
        return handle_unavailable(error)
    log.exception("request %s raised", request_id())
    return error_response(500, "An unexpected error occurred")


def register_error_handlers(app: Flask) -> None:
    app.register_error_handler(DomainError, handle_domain_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    for error_type in UNAVAILABLE:
        app.register_error_handler(error_type, handle_unavailable)
    app.register_error_handler(Exception, handle_unexpected)
