"""Flask extensions, created unbound and initialised by create_app()."""

from __future__ import annotations

from flask_jwt_extended import JWTManager
from flask_smorest import Api

from api.errors import handle_http_exception
from api.ratelimits import ip_key, make_limiter, rate_limit_key

__all__ = ["BatonApi", "ip_key", "jwt", "limiter", "rate_limit_key"]


class BatonApi(Api):
    """flask-smorest Api whose HTTP errors use Baton's envelope."""

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def,override]
        return handle_http_exception(error)


jwt = JWTManager()
limiter = make_limiter()
