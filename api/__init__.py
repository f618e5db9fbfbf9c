"""Baton's HTTP API: ``create_app(test_config)`` in the flaskr style."""

from __future__ import annotations

import importlib
import logging
from datetime import timedelta
from typing import Any

from flask import Flask

from api.common import docs, edge
from api.errors import register_error_handlers
from api.extensions import BatonApi, jwt, limiter
from baton.settings import get_settings

# One blueprint per resource; each module exposes ``blp``.
BLUEPRINT_MODULES = (
    "api.health.routes",
    "api.auth.routes",
    "api.users.routes",
    "api.organizations.routes",
    "api.projects.routes",
    "api.agents.routes",
    "api.agent_runs.routes",
    "api.templates.routes",
    "api.jobs.routes",
    "api.tasks.routes",
    "api.builds.routes",
    "api.analyses.routes",
    "api.orchestrations.routes",
    "api.emergency.routes",
    "api.budget.routes",
    "api.notifications.routes",
    "api.analytics.routes",
    "api.integrations.routes",
)


def create_app(test_config: dict[str, Any] | None = None) -> Flask:
    settings = get_settings()
    app = Flask(__name__)
    app.config.update(
        SECRET_KEY=settings.jwt_secret_key,
        JWT_SECRET_KEY=settings.jwt_secret_key,
        JWT_ACCESS_TOKEN_EXPIRES=timedelta(minutes=settings.access_token_minutes),
        JWT_REFRESH_TOKEN_EXPIRES=timedelta(days=settings.refresh_token_days),
        JWT_TOKEN_LOCATION=["headers"],
        MAX_CONTENT_LENGTH=settings.max_body_bytes,
        API_TITLE="Baton",
        API_VERSION="v1",
        OPENAPI_VERSION="3.0.3",
        OPENAPI_URL_PREFIX="/api/v1",
        OPENAPI_JSON_PATH="openapi.json",
        **docs.settings(),
        # Every route takes a bearer token unless it says otherwise (auth, health).
        API_SPEC_OPTIONS={"security": [{"bearerAuth": []}]},
        RATELIMIT_STORAGE_URI=settings.redis_url or "memory://",
        RATELIMIT_KEY_PREFIX="baton-rl",
        RATELIMIT_DEFAULT=settings.api_rate_limit,
        RATELIMIT_HEADERS_ENABLED=True,
        DATABASE_URL=settings.database_url,
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)

    if "baton.sessions" not in app.extensions:
        from models.db import session_factory

        app.extensions["baton.sessions"] = app.config.get("SESSION_FACTORY") or session_factory(
            app.config["DATABASE_URL"]
        )

    # Before the limiter: its after_request hook (rate-limit headers) must run before
    # edge's, which keeps Retry-After to 429 and 503 answers.
    edge.install(app, max_url_chars=settings.max_url_chars)
    jwt.init_app(app)
    limiter.init_app(app)
    api = BatonApi(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    docs.install(app)
    register_error_handlers(app)
    _register_jwt_callbacks(app)

    for module_name in BLUEPRINT_MODULES:
        module = importlib.import_module(module_name)
        api.register_blueprint(module.blp)

    logging.getLogger("baton").setLevel(logging.INFO)
    return app


def _register_jwt_callbacks(app: Flask) -> None:
    from api.security import sessions
    from orchestration import accounts

    @jwt.token_in_blocklist_loader
    def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        if payload.get("type") != "access":
            return False
        return accounts.is_access_token_revoked(sessions(), jti=payload["jti"])
