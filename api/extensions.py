"""Flask extensions, created unbound and initialised by create_app()."""

from __future__ import annotations

from flask import request
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api

from api.errors import handle_http_exception


class BatonApi(Api):
    """flask-smorest Api whose HTTP errors use Baton's envelope."""

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def,override]
        return handle_http_exception(error)


def rate_limit_key() -> str:
    """Per organization+user when authenticated, else per client IP.

    Uses the same cached principal as the view, so a request's token (and its revocation
    check) is verified once.
    """
    from orchestration.errors import DomainError

    if request.headers.get("Authorization") or request.args.get("token"):
        from api.security import stream_principal

        try:
            principal = stream_principal()
            return f"user:{principal.organization_id}:{principal.user_id}"
        except DomainError:  # an invalid token is answered by the view's own auth check
            pass
    return f"ip:{get_remote_address()}"


def ip_key() -> str:
    return f"ip:{request.remote_addr or 'unknown'}"


jwt = JWTManager()
limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
