"""Authentication and authorisation helpers for views."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g, request
from flask_jwt_extended import decode_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from sqlalchemy.orm import Session, sessionmaker

from orchestration.errors import AuthenticationRequired, Forbidden
from orchestration.principal import Principal

F = TypeVar("F", bound=Callable[..., Any])


def sessions() -> sessionmaker[Session]:
    """The app's session factory (tests swap in one bound to a per-test transaction)."""
    return current_app.extensions["baton.sessions"]


def current_principal() -> Principal:
    if "principal" in g:
        return g.principal
    try:
        verify_jwt_in_request()
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired("A valid bearer token is required") from exc
    claims = get_jwt()
    if claims.get("type") != "access":
        raise AuthenticationRequired("A valid bearer token is required")
    g.principal = Principal(
        user_id=uuid.UUID(claims["sub"]),
        organization_id=uuid.UUID(claims["org"]),
        role=claims["role"],
    )
    return g.principal


def principal_from_token(token: str | None) -> Principal:
    """A principal from a bare access token (WebSocket ``?token=`` or ``auth`` frame,
    Socket.IO ``auth``), checked like a bearer header: signature, expiry, type, revocation."""
    from orchestration import accounts

    if not token:
        raise AuthenticationRequired("A valid access token is required")
    try:
        claims = decode_token(token)
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired("A valid access token is required") from exc
    if claims.get("type") != "access" or accounts.is_access_token_revoked(
        sessions(), jti=claims["jti"]
    ):
        raise AuthenticationRequired("A valid access token is required")
    return Principal(
        user_id=uuid.UUID(claims["sub"]),
        organization_id=uuid.UUID(claims["org"]),
        role=claims["role"],
    )


def stream_principal() -> Principal:
    """The bearer header, else ``?token=`` (an EventSource cannot set headers)."""
    if request.headers.get("Authorization") or not request.args.get("token"):
        return current_principal()
    # Cached apart from g.principal: a ``?token=`` never authenticates a REST route.
    if "query_principal" not in g:
        g.query_principal = principal_from_token(request.args.get("token"))
    return g.query_principal


def requires(
    permission: str | None = None, *, authenticate: Callable[[], Principal] | None = None
) -> Callable[[F], F]:
    """Authenticate (the bearer header, or ``authenticate``), then check one permission of
    the caller's role."""

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = (authenticate or current_principal)()
            if permission and not principal.can(permission):
                raise Forbidden(f"Your role ({principal.role}) does not allow {permission}")
            return fn(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorator
