"""Flask extensions, created unbound and initialised by create_app()."""

from __future__ import annotations

from copy import deepcopy

from flask_jwt_extended import JWTManager
from flask_smorest import Api, Blueprint
from webargs.flaskparser import FlaskParser

from api.common import openapi
from api.common.schemas import ErrorEnvelopeSchema
from api.compat import registry as compat_registry
from api.errors import handle_http_exception
from api.ratelimits import ip_key, make_limiter, rate_limit_key
from orchestration.principal import PERMISSIONS

__all__ = ["BatonApi", "ip_key", "jwt", "limiter", "rate_limit_key"]


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
            dialects=compat_registry.by_tag(),
        )


jwt = JWTManager()
limiter = make_limiter()
