"""POST /auth/register, /auth/login, /auth/refresh, /auth/logout, /auth/2fa/*."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

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
    TwoFactorDisableSchema,
    TwoFactorEnabledSchema,
    TwoFactorEnableSchema,
    TwoFactorSetupAnswerSchema,
    TwoFactorSetupSchema,
    TwoFactorVerifySchema,
)
from api.auth.tokens import (
    TEMP_TOKEN_SECONDS,
    issue_pair,
    read_temp_token,
    temp_token_for,
)
from api.common.openapi import answers
from api.extensions import limiter
from api.ratelimits import ip_key, login_limit, two_factor_key, two_factor_limit
from api.security import current_principal, requires, sessions
from models import User
from orchestration import accounts, two_factor
from orchestration.errors import AuthenticationRequired, field_error

blp = Blueprint("auth", __name__, url_prefix="/api/v1/auth", description="Sign-in and tokens")


def _issue(user: User, family_id: uuid.UUID) -> accounts.TokenPair:
    return issue_pair(user, family_id)


def refresh_claims(token: str) -> dict[str, Any]:
    try:
        claims = decode_token(token)
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired(accounts.INVALID_REFRESH) from exc
    if claims.get("type") != "refresh" or not claims.get("jti"):
        raise AuthenticationRequired(accounts.INVALID_REFRESH)
    return claims


def _present(signin: accounts.SignIn | accounts.SecondFactorRequired) -> dict[str, Any]:
    if isinstance(signin, accounts.SecondFactorRequired):
        purpose = "setup" if signin.setup else "verify"
        return {
            "requires_2fa": True,
            "requires_2fa_setup": signin.setup,
            "temp_token": temp_token_for(user_id=str(signin.user.id), purpose=purpose),
            "expires_in": TEMP_TOKEN_SECONDS,
        }
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
    @limiter.limit(login_limit, key_func=ip_key)
    @blp.arguments(RegisterSchema)
    @blp.response(201, TokenSchema)
    @answers(409, "The email or username is taken.")
    def post(self, data: dict[str, Any]):
        """Create an organization and its first user (an admin); answers like login."""
        registration = accounts.Registration(**data)
        return _present(accounts.register(sessions(), registration=registration, issue=_issue))


# 5 attempts a minute per IP, one bucket for every login route (the seed dialects' too).
login_attempts = limiter.shared_limit(login_limit, scope="login", key_func=ip_key)


@blp.route("/login")
class Login(MethodView):
    @login_attempts
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
        claims = refresh_claims(data["refresh_token"])
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
                refresh_jti = refresh_claims(data["refresh_token"])["jti"]
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


# -- two-factor sign-in --------------------------------------------------------------------

# One bucket per user for every 2FA endpoint (codes cannot be guessed by switching routes)
# that counts failed attempts: enrolling and signing in are never refused for succeeding.
two_factor_attempts = limiter.shared_limit(
    two_factor_limit,
    scope="2fa",
    key_func=two_factor_key,
    deduct_when=lambda response: 400 <= response.status_code != 429,
)


def _setup_user(temp_token: str | None) -> tuple[uuid.UUID, Any]:
    """The bearer's user, or the user of a temp_token from a sign-in that requires setup."""
    if temp_token:
        token = read_temp_token(temp_token, purposes=("setup",))
        return token.user_id, token
    return current_principal().user_id, None


@blp.route("/2fa/setup")
class TwoFactorSetup(MethodView):
    @two_factor_attempts
    @blp.arguments(TwoFactorSetupSchema)
    @blp.response(200, TwoFactorSetupAnswerSchema)
    @blp.doc(security=[{"bearerAuth": []}, {}])
    def post(self, data: dict[str, Any]):
        """Start TOTP enrollment: a new secret and its otpauth:// URI (for a QR code).

        Bearer token, or the temp_token of a sign-in that answered requires_2fa_setup.
        Nothing changes at sign-in until /auth/2fa/enable confirms a code."""
        user_id, _ = _setup_user(data.get("temp_token"))
        setup = two_factor.start_setup(sessions(), user_id=user_id)
        return {
            "secret": setup.secret,
            "provisioning_uri": setup.provisioning_uri,
            "issuer": two_factor.ISSUER,
        }


@blp.route("/2fa/enable")
class TwoFactorEnable(MethodView):
    @two_factor_attempts
    @blp.arguments(TwoFactorEnableSchema)
    @blp.response(200, TwoFactorEnabledSchema)
    @blp.doc(security=[{"bearerAuth": []}, {}])
    def post(self, data: dict[str, Any]):
        """Confirm a code from the new secret: 2FA is on. Answers 10 single-use recovery
        codes, shown only this once; with a temp_token, also the sign-in's tokens."""
        user_id, temp = _setup_user(data.get("temp_token"))
        enabled = two_factor.enable(
            sessions(),
            user_id=user_id,
            code=data["code"],
            issue=_issue,
            temp_token=(temp.jti, temp.expires_at) if temp else None,
        )
        body: dict[str, Any] = {"enabled": True, "recovery_codes": enabled.recovery_codes}
        if enabled.signin is not None:
            body.update(_present(enabled.signin))
        return body


@blp.route("/2fa/verify")
class TwoFactorVerify(MethodView):
    @two_factor_attempts
    @blp.arguments(TwoFactorVerifySchema)
    @blp.response(200, TokenSchema)
    @blp.doc(security=[])
    def post(self, data: dict[str, Any]):
        """Complete a sign-in that answered requires_2fa: the temp_token and a TOTP code
        (or a recovery code, once). Answers like login."""
        temp = read_temp_token(data["temp_token"], purposes=("verify",))
        return _present(
            two_factor.verify_login(
                sessions(),
                user_id=temp.user_id,
                temp_token=(temp.jti, temp.expires_at),
                issue=_issue,
                code=data.get("code"),
                recovery_code=data.get("recovery_code"),
            )
        )


@blp.route("/2fa/disable")
class TwoFactorDisable(MethodView):
    @two_factor_attempts
    @requires()
    @blp.arguments(TwoFactorDisableSchema)
    @blp.response(200, MessageSchema)
    @blp.doc(security=[{"bearerAuth": []}])
    def post(self, data: dict[str, Any]):
        """Turn 2FA off with a current code or a recovery code (403 when the organization
        requires 2FA)."""
        two_factor.disable(
            sessions(),
            user_id=current_principal().user_id,
            code=data.get("code"),
            recovery_code=data.get("recovery_code"),
        )
        return {"message": "Two-factor sign-in is off"}
