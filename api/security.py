"""Authentication and authorisation helpers for views."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import current_app, g
from flask_jwt_extended import get_jwt, verify_jwt_in_request
from flask_jwt_extended.exceptions import JWTExtendedException
from jwt.exceptions import PyJWTError
from sqlalchemy.orm import Session, sessionmaker

from api.common.openapi import mark_authenticated
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


def requires(permission: str | None = None) -> Callable[[F], F]:
    """Authenticate, then check one permission of the caller's role."""

    def decorator(fn: F) -> F:
        @wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            principal = current_principal()
            if permission and not principal.can(permission):
                raise Forbidden(f"Your role ({principal.role}) does not allow {permission}")
            return fn(*args, **kwargs)

        mark_authenticated(wrapper, permission)
        return wrapper  # type: ignore[return-value]

    return decorator
