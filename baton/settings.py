"""The one module that reads the environment.

Every variable has a working default for the embedded mode (SQLite + filesystem broker,
simulated provider), so ``baton up`` needs no services. Values are read when
``get_settings()`` is first called, never at import time of other modules.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path


def _home() -> Path:
    return Path(os.environ.get("BATON_HOME", Path.cwd() / ".baton")).resolve()


def _bool(value: str | None, default: bool) -> bool:
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    celery_broker_url: str
    celery_result_backend: str
    redis_url: str
    jwt_secret_key: str
    encryption_key: str
    openai_api_key: str
    groq_api_key: str
    default_provider: str
    default_model: str
    default_max_tokens: int
    access_token_minutes: int
    refresh_token_days: int
    login_rate_limit: str
    api_rate_limit: str
    max_body_bytes: int
    task_queue_prefix: str
    step_soft_time_limit: int
    step_time_limit: int
    visibility_timeout: int
    stale_queued_seconds: int
    price_table: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    default_price: dict[str, Decimal] | None = None
    flower_basic_auth: str = ""

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def broker_is_filesystem(self) -> bool:
        return self.celery_broker_url.startswith("filesystem")


def _prices(raw: str) -> dict[str, dict[str, Decimal]]:
    """Prices per 1M tokens, USD: {"model": {"input": "2.50", "output": "10.00"}}."""
    if not raw:
        return {}
    data = (
        json.loads(Path(raw).read_text()) if not raw.lstrip().startswith("{") else json.loads(raw)
    )
    return {
        model: {k: Decimal(str(v)) for k, v in price.items() if k in {"input", "output"}}
        for model, price in data.items()
    }


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    home = _home()
    default_price = env.get("BATON_DEFAULT_PRICE", "")
    step_time_limit = int(env.get("BATON_STEP_TIME_LIMIT", "600"))
    return Settings(
        home=home,
        database_url=env.get("DATABASE_URL") or f"sqlite:///{home / 'baton.db'}",
        celery_broker_url=env.get("CELERY_BROKER_URL") or "filesystem://",
        celery_result_backend=env.get("CELERY_RESULT_BACKEND")
        or f"db+sqlite:///{home / 'celery-results.db'}",
        redis_url=env.get("REDIS_URL", ""),
        jwt_secret_key=env.get("JWT_SECRET_KEY")
        or "baton-dev-secret-change-me-in-production-0123456789",
        encryption_key=env.get("BATON_ENCRYPTION_KEY", ""),
        openai_api_key=env.get("OPENAI_API_KEY", ""),
        groq_api_key=env.get("GROQ_API_KEY", ""),
        default_provider=env.get("BATON_DEFAULT_PROVIDER", ""),
        default_model=env.get("BATON_DEFAULT_MODEL", ""),
        default_max_tokens=int(env.get("BATON_DEFAULT_MAX_TOKENS", "1024")),
        access_token_minutes=int(env.get("BATON_ACCESS_TOKEN_MINUTES", "1440")),
        refresh_token_days=int(env.get("BATON_REFRESH_TOKEN_DAYS", "30")),
        login_rate_limit=env.get("BATON_LOGIN_RATE_LIMIT", "5 per minute"),
        api_rate_limit=env.get("BATON_API_RATE_LIMIT", "600 per minute"),
        max_body_bytes=int(env.get("BATON_MAX_BODY_BYTES", str(1024 * 1024))),
        task_queue_prefix=env.get("BATON_QUEUE_PREFIX", "baton"),
        step_soft_time_limit=max(step_time_limit - 30, 1),
        step_time_limit=step_time_limit,
        # Clock order (DESIGN.md): hard time limit < visibility timeout < sweeper age.
        visibility_timeout=int(env.get("BATON_VISIBILITY_TIMEOUT", str(step_time_limit * 2))),
        stale_queued_seconds=int(env.get("BATON_STALE_QUEUED_SECONDS", "1800")),
        price_table=_prices(env.get("BATON_PRICE_TABLE", "")),
        default_price=(
            {k: Decimal(str(v)) for k, v in json.loads(default_price).items()}
            if default_price
            else None
        ),
        flower_basic_auth=env.get("FLOWER_BASIC_AUTH", ""),
    )


def reset_settings_cache() -> None:
    """For tests and the CLI, which set environment variables before building apps."""
    get_settings.cache_clear()
