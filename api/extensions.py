"""Flask extensions, created unbound and initialised by create_app()."""

from __future__ import annotations

from copy import deepcopy

from flask import request
from flask_jwt_extended import JWTManager
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser

from api.common import openapi
from api.common.schemas import ErrorEnvelopeSchema
from api.errors import handle_http_exception
from orchestration.principal import PERMISSIONS


class StrictQueryParser(FlaskParser):
    """An unknown query parameter is a 422 (a misspelt filter must not silently list
    everything): query schemas use their own ``unknown`` (RAISE), like bodies."""

    DEFAULT_UNKNOWN_BY_LOCATION = {
        **FlaskParser.DEFAULT_UNKNOWN_BY_LOCATION,
        "query": None,
        "querystring": None,
    }


# Every blueprint's @blp.arguments binds this parser when its module is imported, which
# create_app does after importing this module.
Blueprint.ARGUMENTS_PARSER = StrictQueryParser()


class BatonApi(Api):
    """flask-smorest Api whose HTTP errors use Baton's envelope, in the answers and in the
    OpenAPI document (``openapi.finalize`` completes it when it is built)."""

    ERROR_SCHEMA = ErrorEnvelopeSchema

    def handle_http_exception(self, error):  # type: ignore[no-untyped-def,override]
        return handle_http_exception(error)

    def _init_spec(self, *args, **kwargs):  # type: ignore[no-untyped-def]
        super()._init_spec(*args, **kwargs)
        openapi.register_fields(self)
        generate = self.spec.to_dict
        everyone = set.intersection(*(set(p) for p in PERMISSIONS.values()))
        # apispec hands out its own dicts: finish a copy, so every build starts afresh.
        self.spec.to_dict = lambda: openapi.finalize(  # type: ignore[method-assign]
            deepcopy(generate()),
            public_permissions=everyone,
            # Blueprints given to limiter.exempt (read when the document is built).
            unlimited_tags=set(getattr(limiter, "_blueprint_exemptions", {})),
        )


def rate_limit_key() -> str:
    """Per organization+user when authenticated, else per client IP.

    Uses the same cached principal as the view, so a request's token (and its revocation
    check) is verified once.
    """
    from api.security import current_principal
    from orchestration.errors import DomainError

    if request.headers.get("Authorization"):
        try:
            principal = current_principal()
            return f"user:{principal.organization_id}:{principal.user_id}"
        except DomainError:  # an invalid token is answered by the view's own auth check
            pass
    return f"ip:{get_remote_address()}"


def ip_key() -> str:
    return f"ip:{request.remote_addr or 'unknown'}"


jwt = JWTManager()
limiter = Limiter(key_func=rate_limit_key, headers_enabled=True)
