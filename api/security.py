"""Authentication and authorisation helpers for views."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

import jwt
from flask import current_app, g, has_request_context, request
from flask_jwt_extended import decode_token, get_jwt, verify_jwt_in_request
from flask_jwt_extended.config import config as jwt_config
from flask_jwt_extended.default_callbacks import default_decode_key_callback
from flask_jwt_extended.exceptions import JWTDecodeError, JWTExtendedException, UserLookupError
from flask_jwt_extended.internal_utils import (
    custom_verification_for_token,
    get_jwt_manager,
    has_user_lookup,
    user_lookup,
    verify_token_not_blocklisted,
    verify_token_type,
)
from flask_jwt_extended.view_decorators import _decode_jwt_from_headers
from jwt.exceptions import PyJWTError
from sqlalchemy.orm import Session, sessionmaker

from api.auth.tokens import token_user_id
from api.common.openapi import mark_authenticated
from baton import observability
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
        verified = verify_bearer_token()
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired("A valid bearer token is required") from exc
    if not verified:  # an exempt method (OPTIONS): flask-jwt-extended checked nothing
        raise AuthenticationRequired("A valid bearer token is required")
    claims = get_jwt()
    if claims.get("type") != "access":
        raise AuthenticationRequired("A valid bearer token is required")
    # The role is the user's current one (read with the revocation check), not the
    # token's: a demotion applies from the next request.
    g.principal = Principal(
        user_id=token_user_id(claims),
        organization_id=g.live_session.organization_id,
        role=g.live_session.role,
        block_limits=g.live_session.has_block_limits,
    )
    observability.bind(organization_id=g.principal.organization_id)
    return g.principal


class _RememberedSignatures(jwt.PyJWS):
    """PyJWS whose signature check (the HMAC, the header and the base64 parse, the larger
    part of a token's decode) is remembered for the tokens it verified: a bearer sends the
    same token with every request until it expires.

    Exact: the check is a function of the token's text, the key, the allowed algorithms
    and the options, all in the key of the cache, and only a token that passed is
    remembered (a failure raises, as before, every time). The claims (expiry, not
    before, issued at, audience...) are not cached: PyJWT validates them on every decode
    from the payload's text, nor is the revocation check (``live_session``: a SELECT
    every request). A changed secret misses the cache.
    """

    def decode_complete(  # type: ignore[override]
        self,
        jwt: str | bytes,
        key: Any = "",
        algorithms: Any = None,
        options: Any = None,
        detached_payload: bytes | None = None,
        **kwargs: Any,
    ) -> dict[str, Any]:
        if kwargs or detached_payload is not None or not isinstance(key, str | bytes):
            return super().decode_complete(
                jwt, key, algorithms, options, detached_payload, **kwargs
            )
        payload, header, signature = self._verified(
            jwt, key, tuple(algorithms or ()), tuple(sorted((options or {}).items()))
        )
        # A fresh header for each caller (flask-jwt-extended keeps it on ``g``).
        return {"payload": payload, "header": dict(header), "signature": signature}

    @functools.lru_cache(maxsize=1024)  # noqa: B019 - one instance, for the process's life
    def _verified(
        self, token: str | bytes, key: str | bytes, algorithms: tuple[str, ...], options: tuple
    ) -> tuple[bytes, dict[str, Any], bytes]:
        decoded = super().decode_complete(token, key, list(algorithms) or None, dict(options))
        return decoded["payload"], decoded["header"], decoded["signature"]


# PyJWT's decoder with the remembered signature check; claims are validated by PyJWT's
# own code on each decode.
_decoder = jwt.PyJWT()
_decoder._jws = _RememberedSignatures(options=_decoder._get_sig_options())


def verify_bearer_token() -> bool:
    """``flask_jwt_extended.verify_jwt_in_request()`` (False for an exempt method) with the
    token parsed once instead of four times.

    The library decodes each token twice (unverified, for a decode-key callback Baton does
    not register, then verified) and parses its header twice more; each parse checks the
    base64 alphabet a character at a time, about a tenth of a submission's CPU. With the
    library's default decode key and the token in the header only (Baton's settings),
    this is its own sequence of checks on one ``jwt.decode_complete``: signature, expiry
    and the other registered claims, the identity claim, the token's type, the blocklist
    callback (the revocation SELECT), the custom claims check and the user loader, and
    ``get_jwt()`` answers as after the library's check (the signature check remembered
    per token, ``_RememberedSignatures``). Any other configuration goes to the library. Pinned to the library by tests/test_auth.py (same claims, same errors).
    """
    manager = get_jwt_manager()
    if (
        tuple(jwt_config.token_location) != ("headers",)
        or manager._decode_key_callback is not default_decode_key_callback
    ):
        return verify_jwt_in_request() is not None
    if request.method in jwt_config.exempt_methods:
        return False
    encoded_token, _ = _decode_jwt_from_headers()
    audience = jwt_config.decode_audience
    complete = _decoder.decode_complete(
        encoded_token,
        jwt_config.decode_key,
        algorithms=jwt_config.decode_algorithms,
        audience=audience,
        issuer=jwt_config.decode_issuer,
        leeway=jwt_config.leeway,
        options={"verify_aud": audience is not None, "verify_sub": jwt_config.verify_sub},
    )
    header, claims = complete["header"], complete["payload"]
    identity_key = jwt_config.identity_claim_key
    if identity_key not in claims:
        raise JWTDecodeError(f"Missing claim: {identity_key}")
    claims.setdefault("type", "access")
    claims.setdefault("fresh", False)
    claims.setdefault("jti", None)
    verify_token_type(claims, refresh=False)
    verify_token_not_blocklisted(header, claims)
    custom_verification_for_token(header, claims)
    loaded = None
    if has_user_lookup():
        user = user_lookup(header, claims)
        if user is None:
            raise UserLookupError(
                f"user_lookup returned None for {claims[identity_key]}", header, claims
            )
        loaded = {"loaded_user": user}
    g._jwt_extended_jwt_user = loaded
    g._jwt_extended_jwt_header = header
    g._jwt_extended_jwt = claims
    g._jwt_extended_jwt_location = "headers"
    return True


def live_session_of(claims: dict[str, Any]):  # type: ignore[no-untyped-def]
    """The login behind an access token's claims, or None when it must be refused: not an
    access token Baton issued, the user gone or deactivated, the token logged out, or its
    login (refresh family) revoked."""
    from orchestration import accounts

    if claims.get("type") != "access":
        return None
    try:
        user_id = token_user_id(claims)
        family_id = uuid.UUID(claims["fam"])
    except (KeyError, TypeError, ValueError):
        return None
    live = accounts.live_session(
        sessions(), user_id=user_id, jti=claims["jti"], family_id=family_id
    )
    if live is None or str(live.organization_id) != claims.get("org"):
        return None
    return live


def principal_from_token(token: str | None) -> Principal:
    """A principal from a bare access token (WebSocket ``?token=`` or ``auth`` frame,
    Socket.IO ``auth``), checked like a bearer header: signature, expiry, type, and a
    live login of an active user."""
    if not token:
        raise AuthenticationRequired("A valid access token is required")
    try:
        claims = decode_token(token)
    except (JWTExtendedException, PyJWTError) as exc:
        raise AuthenticationRequired("A valid access token is required") from exc
    live = live_session_of(claims)
    if live is None:
        raise AuthenticationRequired("A valid access token is required")
    if has_request_context() and "live_session" not in g:
        g.live_session = live  # the quota hook reads it, as for a bearer header
    return Principal(
        user_id=token_user_id(claims),
        organization_id=live.organization_id,
        role=live.role,
        block_limits=live.has_block_limits,
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

        mark_authenticated(wrapper, permission)
        return wrapper  # type: ignore[return-value]

    return decorator
