"""The JWT claims contract: sub = user id, org, role, permissions, fam; 2FA temp tokens."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from flask import current_app
from flask_jwt_extended import create_access_token, create_refresh_token, decode_token

from orchestration.errors import AuthenticationRequired
from orchestration.principal import PERMISSIONS


def access_token_for(
    *,
    user_id: str,
    organization_id: str,
    role: str,
    family: str,
    subject: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> str:
    """``fam`` ties the access token to its login: revoking the family ends both. ``uid``
    names the user whatever ``sub`` says (a seed dialect may make ``sub`` a username and
    add claims of its own: ``extra_claims`` overrides ``role``/``permissions`` too)."""
    return create_access_token(
        identity=subject or user_id,
        additional_claims={
            "org": organization_id,
            "role": role,
            "permissions": list(PERMISSIONS.get(role, ())),
            "fam": family,
            "uid": user_id,
            **(extra_claims or {}),
        },
    )


def token_user_id(claims: dict[str, Any]) -> uuid.UUID:
    """The user an access token names (``uid``; tokens before it name it in ``sub``)."""
    return uuid.UUID(str(claims.get("uid") or claims["sub"]))


def issue_pair(
    user: Any,
    family_id: uuid.UUID,
    *,
    subject: str | None = None,
    extra_claims: dict[str, Any] | None = None,
) -> Any:
    """Mint the pair with the app's JWT settings; orchestration records the refresh jti."""
    from orchestration import accounts

    claims = {
        "user_id": str(user.id),
        "organization_id": str(user.organization_id),
        "role": user.role,
    }
    access = access_token_for(
        **claims, family=str(family_id), subject=subject, extra_claims=extra_claims
    )
    refresh = refresh_token_for(**claims, family=str(family_id))
    decoded = decode_token(refresh)
    return accounts.TokenPair(
        access_token=access,
        refresh_token=refresh,
        refresh_jti=decoded["jti"],
        refresh_expires_at=datetime.fromtimestamp(decoded["exp"], UTC),
        expires_in=int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    )


def refresh_token_for(*, user_id: str, organization_id: str, role: str, family: str) -> str:
    return create_refresh_token(
        identity=user_id, additional_claims={"org": organization_id, "role": role, "fam": family}
    )


# -- 2FA temp tokens -----------------------------------------------------------------------
# Signed like the JWTs but with their own audience and no "type": flask-jwt-extended
# refuses them as bearer tokens (an audience it does not expect), so a temp_token opens
# nothing but /auth/2fa/verify (and /auth/2fa/setup|enable when setup is required).
TEMP_AUDIENCE = "baton:2fa"
TEMP_TOKEN_SECONDS = 300


@dataclass(frozen=True)
class TempToken:
    user_id: uuid.UUID
    purpose: str  # "verify" or "setup"
    jti: str
    expires_at: datetime


def temp_token_for(*, user_id: str, purpose: str) -> str:
    now = datetime.now(UTC)
    claims = {
        "sub": user_id,
        "aud": TEMP_AUDIENCE,
        "purpose": purpose,
        "jti": str(uuid.uuid4()),
        "iat": now,
        "exp": now + timedelta(seconds=TEMP_TOKEN_SECONDS),
    }
    return jwt.encode(claims, current_app.config["JWT_SECRET_KEY"], algorithm="HS256")


def read_temp_token(token: str, *, purposes: tuple[str, ...]) -> TempToken:
    try:
        claims = jwt.decode(
            token,
            current_app.config["JWT_SECRET_KEY"],
            algorithms=["HS256"],
            audience=TEMP_AUDIENCE,
            options={"require": ["sub", "exp", "jti", "aud"]},
        )
        user_id = uuid.UUID(claims["sub"])
    except (jwt.PyJWTError, ValueError, TypeError) as exc:
        raise AuthenticationRequired("The temp_token is invalid or expired; sign in again") from exc
    if claims.get("purpose") not in purposes:
        raise AuthenticationRequired("This temp_token cannot be used here")
    return TempToken(
        user_id=user_id,
        purpose=claims["purpose"],
        jti=claims["jti"],
        expires_at=datetime.fromtimestamp(claims["exp"], UTC),
    )


def temp_token_subject(token: str) -> str | None:
    """The user a temp_token names, for rate-limit keys (signature checked, expiry not)."""
    try:
        claims = jwt.decode(
            token,
            current_app.config["JWT_SECRET_KEY"],
            algorithms=["HS256"],
            audience=TEMP_AUDIENCE,
            options={"verify_exp": False},
        )
    except jwt.PyJWTError:
        return None
    return str(claims.get("sub")) if claims.get("sub") else None
