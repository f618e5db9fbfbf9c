"""Baton's HTTP API: ``create_app(test_config)`` in the flaskr style."""

from __future__ import annotations

import importlib
import logging
import time
from datetime import timedelta
from typing import Any

from flask import Flask, g

from api import compat, idempotency, observability, quotas, ratelimits
from api.common import docs, edge
from api.errors import register_error_handlers
from api.extensions import BatonApi, jwt, limiter
from baton.observability import configure_logging
from baton.settings import get_settings
from orchestration import canvas

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
    "api.webhooks.routes",
    "api.github.routes",
    "api.project_issues.routes",
    "api.project_tasks.routes",
    "api.pull_requests.routes",
    "api.streams.routes",
    "api.conversations.routes",
    "api.project_agents.routes",
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
        RATELIMIT_STORAGE_URI=ratelimits.storage_uri(settings.redis_url),
        # Every limiter key under BATON_REDIS_PREFIX ("<prefix>:ratelimit:LIMITER/..."); a
        # paused Redis costs at most a second before the in-memory fallback below.
        RATELIMIT_STORAGE_OPTIONS={
            "key_prefix": f"{settings.redis_prefix}:ratelimit",
            "socket_connect_timeout": 1,
            "socket_timeout": 1,
        },
        RATELIMIT_HEADERS_ENABLED=True,
        # Read per request by api/ratelimits.py (per user across routes, per organization,
        # per endpoint, per IP for sign-in).
        BATON_USER_RATE_LIMIT=settings.api_rate_limit,
        BATON_ORG_RATE_LIMIT=settings.org_rate_limit,
        BATON_BUILD_RATE_LIMIT=settings.build_rate_limit,
        BATON_ANALYSIS_RATE_LIMIT=settings.analysis_rate_limit,
        BATON_LOGIN_RATE_LIMIT=settings.login_rate_limit,
        BATON_2FA_RATE_LIMIT=settings.two_factor_rate_limit,
        # Redis unreachable: count in memory (and log) rather than fail the request.
        RATELIMIT_IN_MEMORY_FALLBACK_ENABLED=True,
        RATELIMIT_SWALLOW_ERRORS=True,
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

    configure_logging()
    canvas.bound_broker_waits()  # a submission answers 503 in bounded time, never hangs
    # First: its before_request hook runs before any that may refuse the request (the
    # edge's checks, the rate limits), so those answers are measured too.
    _measure_requests(app)
    observability.init_app(app)
    # Before the limiter: its after_request hook (rate-limit headers) must run before
    # edge's, which keeps Retry-After to 429 and 503 answers.
    edge.install(app, max_url_chars=settings.max_url_chars)
    jwt.init_app(app)
    ratelimits.install_buckets(app, limiter)  # before the limiter: they are counted first
    limiter.init_app(app)
    limiter.exempt(app.view_functions["metrics"])
    api = BatonApi(app)
    api.spec.components.security_scheme(
        "bearerAuth", {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    )
    docs.install(app)
    register_error_handlers(app)
    ratelimits.install(app, limiter)
    quotas.install(app)
    idempotency.install(app)
    _register_jwt_callbacks(app)

    for module_name in BLUEPRINT_MODULES:
        module = importlib.import_module(module_name)
        api.register_blueprint(module.blp)
    # Seed dialects (issue 15): each document at its own base URL, on the same engine.
    compat.install(api)

    logging.getLogger("baton").setLevel(logging.INFO)
    return app


def _measure_requests(app: Flask) -> None:
    """Every answered request feeds /analytics/performance (issue 13)."""
    from orchestration import performance

    @app.before_request
    def _started() -> None:
        g.baton_started = time.perf_counter()

    @app.after_request
    def _record(response):  # type: ignore[no-untyped-def]
        started = g.get("baton_started")
        if started is not None:
            elapsed_ms = (time.perf_counter() - started) * 1000
            performance.record_request(response.status_code, elapsed_ms)
        return response


def _register_jwt_callbacks(app: Flask) -> None:
    from api.security import live_session_of

    @jwt.token_in_blocklist_loader
    def _is_revoked(_header: dict[str, Any], payload: dict[str, Any]) -> bool:
        """Every bearer request: is the user still active and the login still alive?"""
        if payload.get("type") != "access":
            return False
        live = live_session_of(payload)
        if live is None:
            return True
        g.live_session = live
        return False
