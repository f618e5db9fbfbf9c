"""Flask extensions, created unbound and initialised by create_app()."""

from __future__ import annotations

from flask import request
from flask_jwt_extended import JWTManager, get_jwt, verify_jwt_in_request
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api

from api.errors import handle_http_exception


class BatonApi(Api):
    """flask-smorest Api whose HTTP errors use Baton's envelope."""

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def,override]
        return handle_http_exception(error)


def rate_limit_key() -> str:
    """Per organization+user when authenticated, else per client IP."""
    try:
        verify_jwt_in_request(optional=True)
        claims = get_jwt()
    except Exception:  # an invalid token is answered by the view's own auth check
        claims = {}
    if claims.get("sub"):
        return f"user:{claims.get('org')}:{claims['sub']}"
    return f"ip:{get_remote_address()}"


def ip_key() -> str:
    return f"ip:{request.remote_addr or 'unknown'}"


jwt = JWTManager()
limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
