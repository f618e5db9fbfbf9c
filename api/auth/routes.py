"""POST /auth/register, /auth/login, /auth/refresh, /auth/logout."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

from flask import current_app
from flask.views import MethodView
from flask_jwt_extended import decode_token, get_jwt
from flask_jwt_extended.exceptions import JWTExtendedException
from flask_smorest import Blueprint
from jwt.exceptions import PyJWTError

from api.auth.schemas import (
    LoginSchema,
    LogoutSchema,
    MessageSchema,
    RefreshSchema,
    RegisterSchema,
    TokenSchema,
)
from api.auth.tokens import access_token_for, refresh_token_for
from api.common.openapi import answers
from api.extensions import ip_key, limiter
from api.security import current_principal, requires, sessions
from baton.settings import get_settings
from models import User
from orchestration import accounts
from orchestration.errors import AuthenticationRequired, field_error

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Sign-in and tokens")


def _login_limit() -> str:
    return get_settings().login_rate_limit


def _issue(user: User, family_id: uuid.UUID) -> accounts.TokenPair:
    """Mint the pair with the app's JWT settings; orchestration records the refresh jti."""
    claims = {
        "user_id": str(user.id),
        "organization_id": str(user.organization_id),
        "role": user.role,
    }
    access = access_token_for(**claims)
    refresh = refresh_token_for(**claims, family=str(family_id))
    decoded = decode_token(refresh)
    return accounts.TokenPair(
        access_token=access,
        refresh_token=refresh,
        refresh_jti=decoded["jti"],
        refresh_expires_at=datetime.fromtimestamp(decoded["exp"], UTC),
        expires_in=int(current_app.config["JWT_ACCESS_TOKEN_EXPIRES"].total_seconds()),
    )


def _refresh_claims(token: str) -> dict[str, Any]:
    try:
        claims = decode_token(token)
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired(accounts.INVALID_REFRESH) from exc
    if claims.get("type") != "refresh" or not claims.get("jti"):
        raise AuthenticationRequired(accounts.INVALID_REFRESH)
    return claims


def _present(signin: accounts.SignIn) -> dict[str, Any]:
    return {
        "access_token": signin.tokens.access_token,
        "refresh_token": signin.tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": signin.tokens.expires_in,
        "requires_2fa": False,
        "user": signin.user,
    }


@blp.route("/register")
class Register(MethodView):
    # Same per-IP budget as login: sign-up is as abusable as sign-in.
    @limiter.limit(_login_limit, key_func=ip_key)
    @blp.arguments(RegisterSchema)
    @blp.response(201, TokenSchema)
    @answers(409, "The email or username is taken.")
    def post(self, data: dict[str, Any]):
        """Create an organization and its first user (an admin); answers like login."""
        registration = accounts.Registration(**data)
        return _present(accounts.register(sessions(), registration=registration, issue=_issue))


@blp.route("/login")
class Login(MethodView):
    @limiter.limit(_login_limit, key_func=ip_key)
    @blp.arguments(LoginSchema)
    @blp.response(200, TokenSchema)
    @answers(401, "Wrong email/username or password.")
    def post(self, data: dict[str, Any]):
        """Email or username + password -> access and refresh tokens (5 attempts/min per IP)."""
        return _present(
            accounts.login(
                sessions(),
                email=data.get("email"),
                username=data.get("username"),
                password=data["password"],
                issue=_issue,
            )
        )


@blp.route("/refresh")
class Refresh(MethodView):
    @blp.arguments(RefreshSchema)
    @blp.response(200, TokenSchema)
    @answers(401, "The refresh token is invalid, expired or already spent.")
    def post(self, data: dict[str, Any]):
        """Rotate a refresh token; presenting a spent one revokes its whole login (401)."""
        claims = _refresh_claims(data["refresh_token"])
        return _present(accounts.refresh(sessions(), jti=claims["jti"], issue=_issue))


@blp.route("/logout")
class Logout(MethodView):
    @requires()
    @blp.arguments(LogoutSchema)
    @blp.response(200, MessageSchema)
    @blp.doc(security=[{"bearerAuth": []}])
    def post(self, data: dict[str, Any]):
        """Revoke the presented access token and, if given, the refresh token's login."""
        principal = current_principal()
        access = get_jwt()
        refresh_jti = None
        if data.get("refresh_token"):
            try:
                refresh_jti = _refresh_claims(data["refresh_token"])["jti"]
            except AuthenticationRequired as exc:
                raise field_error("refresh_token", "is not a valid refresh token") from exc
        accounts.logout(
            sessions(),
            principal=principal,
            access_jti=access["jti"],
            access_expires_at=datetime.fromtimestamp(access["exp"], UTC),
            refresh_jti=refresh_jti,
        )
        return {"message": "Successfully logged out"}
