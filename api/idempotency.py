"""Idempotency-Key at the edge: every authenticated POST or PATCH that carries the header
is claimed before its view runs and its answer stored after (orchestration/idempotency)."""

from __future__ import annotations

import hashlib
import json

from flask import Flask, Response, g, request

from api.ratelimits import authenticated_principal
from api.security import sessions
from orchestration import idempotency
from orchestration.errors import field_error

METHODS = {"POST", "PATCH"}
REPLAYED_HEADERS = ("Location", "Content-Type")


def _fingerprint() -> str:
    """The request as a hash: path, query and body (JSON compared by value)."""
    raw = request.get_data(cache=True)
    try:
        body = json.dumps(json.loads(raw), sort_keys=True, separators=(",", ":")).encode()
    except (ValueError, UnicodeDecodeError):
        body = raw
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), request.query_string, body):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def install(app: Flask) -> None:
    # Registered after the rate limiter and the quota: a refused request claims no key.
    @app.before_request
    def _claim() -> Response | None:
        key = request.headers.get(idempotency.HEADER)
        if key is None or request.method not in METHODS or request.url_rule is None:
            return None
        principal = authenticated_principal()
        if principal is None:
            return None  # the view answers 401
        if not (1 <= len(key) <= 255) or not key.isprintable():
            raise field_error(idempotency.HEADER, "must be 1-255 printable characters")
        outcome = idempotency.begin(
            sessions(),
            organization_id=principal.organization_id,
            operation=f"{request.method} {request.url_rule.rule}",
            key=key,
            fingerprint=_fingerprint(),
        )
        if isinstance(outcome, idempotency.Replay):
            response = Response(outcome.body, status=outcome.status)
            for name, value in outcome.headers.items():
                response.headers[name] = value
            response.headers["Idempotent-Replayed"] = "true"
            return response
        g.idempotency_claim = outcome
        return None

    @app.after_request
    def _store(response: Response) -> Response:
        claim = g.pop("idempotency_claim", None)
        if claim is None:
            return response
        # A streamed answer cannot be kept: the key is released and a retry runs again.
        body = None if response.is_streamed else response.get_data(as_text=True)
        headers = {h: response.headers[h] for h in REPLAYED_HEADERS if h in response.headers}
        idempotency.finish(
            sessions(), claim=claim, status=response.status_code, body=body, headers=headers
        )
        return response
