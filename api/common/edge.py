"""Checks every API request passes before a view sees it, and headers every answer gets.

One place for what no single schema can refuse: a NUL character anywhere (PostgreSQL
rejects it in text, so it would surface as a 500 deep below), a body that is not JSON
(415, not a misleading "field required" 422), a body past the size limit even when sent
chunked (413, not a 400 from the JSON parser), and a request line too long (414).
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from flask import Flask, Response, g, request
from werkzeug.exceptions import RequestEntityTooLarge

from api.compat import registry as compat_registry
from orchestration.errors import DomainError, ValidationFailed

API_PREFIX = "/api/v1"
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# A client's own X-Request-ID is echoed only when it is a plain token of sane length:
# it goes into logs and answers, so nothing that could forge a log line.
SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:+/=-]{1,128}")
# Retry-After means "come back later": only a refusal for load (429) or an unavailable
# service (503) carries it.
RETRY_AFTER_STATUSES = frozenset({429, 503})
NUL = "\x00"


class UnsupportedMediaType(DomainError):
    code, status = "UNSUPPORTED_MEDIA_TYPE", 415


class UriTooLong(DomainError):
    code, status = "URI_TOO_LONG", 414


def request_id() -> str:
    if "request_id" not in g:
        sent = request.headers.get("X-Request-ID", "")
        g.request_id = sent if SANE_REQUEST_ID.fullmatch(sent) else str(uuid.uuid4())
    return g.request_id


def _nul_error(where: str) -> ValidationFailed:
    return ValidationFailed(
        "The request contains invalid data",
        [{"field": where, "message": "must not contain a NUL character"}],
    )


def _find_nul(value: Any, path: str) -> str | None:
    """The path of the first string (key or value) in a JSON document holding a NUL."""
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            child = f"{path}.{key}" if path else str(key)
            if NUL in key:
                return child
            if found := _find_nul(item, child):
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if found := _find_nul(item, f"{path}.{index}" if path else str(index)):
                return found
    return None


def _has_body() -> bool:
    return (
        bool(request.content_length)
        or "chunked" in request.headers.get("Transfer-Encoding", "").lower()
    )


def check_request(max_url_chars: int) -> None:
    """Refuse what no view should see; raises a DomainError answered in the envelope."""
    # The canonical API and every seed dialect's base (api.compat registers them).
    if not request.path.startswith((API_PREFIX, *compat_registry.prefixes())):
        return
    if len(request.full_path) > max_url_chars:
        raise UriTooLong(f"The request URL is longer than {max_url_chars} characters")
    for name, value in request.headers.items():
        if NUL in value:
            raise _nul_error(name)
    if NUL in request.path:
        raise _nul_error("_path")
    for key, value in request.args.items(multi=True):
        if NUL in key or NUL in value:
            raise _nul_error(key.replace(NUL, "\\0"))
    if request.method not in BODY_METHODS or not _has_body():
        return
    # Read the body first: an oversized one is a 413 here, instead of being reported by
    # the JSON parser as a malformed document. A sized one raises as it is read; a chunked
    # one is cut silently at the limit by werkzeug, so reaching the limit is too much.
    data = request.get_data(cache=True)
    limit = request.max_content_length
    if request.content_length is None and limit is not None and len(data) >= limit:
        raise RequestEntityTooLarge()
    if not data:
        return
    if not request.is_json:
        raise UnsupportedMediaType(
            "The request body must be JSON, sent with Content-Type: application/json",
            [{"field": "Content-Type", "message": f"got '{request.mimetype or 'none'}'"}],
        )
    document = request.get_json(silent=True)
    if (where := _find_nul(document, "")) is not None:
        raise _nul_error(where or "_body")


def finish_response(response: Response) -> Response:
    response.headers["X-Request-ID"] = request_id()
    if response.status_code not in RETRY_AFTER_STATUSES:
        response.headers.pop("Retry-After", None)
    elif response.status_code == 429 and "rate_limit_retry_after" in g:
        # The 429 body's retry_after (api.ratelimits), not Flask-Limiter's own rounding
        # (its header hook runs before this one and truncates): the two always agree.
        response.headers["Retry-After"] = str(g.rate_limit_retry_after)
    if response.status_code == 401:
        response.headers.setdefault("WWW-Authenticate", 'Bearer realm="baton"')
    return response


def install(app: Flask, *, max_url_chars: int) -> None:
    """Register the checks; call before extensions that add headers (Flask-Limiter), so
    ``finish_response`` runs after theirs (after_request hooks run in reverse order)."""
    app.before_request(lambda: check_request(max_url_chars))
    app.after_request(finish_response)
