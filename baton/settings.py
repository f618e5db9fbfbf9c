"""The one module that reads the environment.

Every variable has a working default for the embedded mode (SQLite + filesystem broker,
simulated provider), so ``baton up`` needs no services. Values are read when
``get_settings()`` is first called, never at import time of other modules.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
from dataclasses import dataclass, field
from decimal import Decimal
from functools import lru_cache
from pathlib import Path


def _home() -> Path:
    return Path(os.environ.get("BATON_HOME", Path.cwd() / ".baton")).resolve()


PROVIDER_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,59}$")


@dataclass(frozen=True)
class ConfiguredProvider:
    """An OpenAI-compatible server added by the operator (BATON_PROVIDERS)."""

    name: str
    base_url: str
    api_key_env: str | None  # the environment variable holding its key; None: keyless
    models: tuple[str, ...]
    timeout_seconds: float = 60.0
    prices: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    max_tokens_param: str | None = None  # "max_tokens" or "max_completion_tokens"


# Secrets never appear in a repr (a logged Settings object must not leak a key).
@dataclass(frozen=True)
class Settings:
    home: Path
    database_url: str
    celery_broker_url: str
    celery_result_backend: str
    redis_url: str
    jwt_secret_key: str = field(repr=False)
    encryption_key: str = field(repr=False)
    openai_api_key: str = field(repr=False)
    groq_api_key: str = field(repr=False)
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
    price_table: dict[str, dict[str, Decimal]] = field(default_factory=dict)
    default_price: dict[str, Decimal] | None = None
    flower_basic_auth: str = field(default="", repr=False)
    # Operator-configured OpenAI-compatible providers, and every provider key the
    # environment holds, by variable name (OPENAI_API_KEY, GROQ_API_KEY, each api_key_env).
    configured_providers: tuple[ConfiguredProvider, ...] = ()
    provider_keys: dict[str, str] = field(default_factory=dict, repr=False)
    # Redis keys (breaker state, worker heartbeats, live channels) start with this prefix.
    redis_prefix: str = "baton"
    breaker_failures: int = 5
    breaker_window_seconds: float = 60.0
    breaker_cooldown_seconds: float = 30.0
    stream_event_chars: int = 200
    stream_event_seconds: float = 0.25
    worker_heartbeat_seconds: float = 10.0
    # Issue 8 (recovery): a queued or running job with no event for this long is re-sent
    # by beat's reaper, which runs every reaper_interval_seconds (well below it). Clock
    # order: step hard time limit < visibility timeout < stall_seconds.
    stall_seconds: int = 180
    reaper_interval_seconds: float = 30.0
    # A step delivered this many times without finishing fails its job (a step that kills
    # its worker every time must not be re-sent for ever).
    step_max_deliveries: int = 3
    # How long a task retries a transaction through a database outage (capped by the
    # step's soft time limit for a step holding a paid answer).
    db_retry_seconds: float = 60.0
    # Issue 13: the tool loop's bounds and external task servers.
    tool_max_turns: int = 6  # model turns of one step; more is a failed step
    tool_max_calls: int = 12  # tool calls of one step; later calls are refused to the model
    tool_timeout_seconds: float = 10.0  # one tool call
    tool_result_chars: int = 4000  # what the model is shown of one tool result
    external_poll_seconds: float = 1.0  # first poll of an external task, then doubling
    external_poll_max_seconds: float = 30.0
    external_timeout_seconds: float = 1800.0  # an external task not done by then fails
    external_request_seconds: float = 10.0  # one HTTP request to a task server
    external_hold: Decimal = Decimal("0.01")  # held per external task until its cost is known
    # Issue 9: limits per organization and per endpoint (seeds 002, 004), 2FA attempts,
    # Idempotency-Key lifetime, monthly API quota of a new organization (None: unlimited).
    org_rate_limit: str = "3000 per minute"
    build_rate_limit: str = "10 per minute"
    analysis_rate_limit: str = "5 per minute"
    two_factor_rate_limit: str = "5 per minute"
    idempotency_ttl_seconds: int = 86400
    idempotency_lock_seconds: int = 300
    default_api_quota: int | None = None
    # Issue 8 (operations): logs, metrics, timeouts of the API's outside calls.
    log_format: str = "json"
    log_level: str = "INFO"
    metrics_dir: str = ""  # PROMETHEUS_MULTIPROC_DIR, set by `baton api|worker` per process
    worker_metrics_port: int = 0  # 0: the worker serves no /metrics
    worker_metrics_host: str = "0.0.0.0"
    api_timeout: int = 60  # gunicorn's worker timeout, seconds
    broker_timeout_seconds: float = 3.0  # a send waits at most about this long for the broker
    db_connect_timeout: int = 5
    unavailable_retry_after: int = 5  # Retry-After on a 503
    # Issues 9 (item 10) and 12: outbound calls, webhooks out, GitHub in and out.
    allowed_private_hosts: str = ""
    webhook_timeout_seconds: float = 10.0
    webhook_max_attempts: int = 8
    webhook_backoff_seconds: float = 2.0
    webhook_backoff_max_seconds: float = 3600.0
    webhook_disable_after_failures: int = 5
    webhook_secret_grace_hours: float = 24.0
    webhook_resend_after_seconds: float = 300.0
    github_webhook_secret: str = field(default="", repr=False)
    github_api_url: str = "https://api.github.com"
    github_app_private_key: str = field(default="", repr=False)
    github_timeout_seconds: float = 15.0
    # Issue 10: live streams (SSE, WebSocket, Socket.IO).
    stream_heartbeat_seconds: float = 15.0
    stream_poll_seconds: float = 1.0
    stream_buffer_messages: int = 1000
    stream_max_per_user: int = 20
    # Issue 9 (API contract): a request URL (path + query) longer than this is a 414 in
    # the error envelope; gunicorn's own request-line limit is set above it (baton api).
    max_url_chars: int = 4096
    # Issue 11: conversations.
    chat_max_message_chars: int = 32000  # a longer message is a 422
    chat_history_tokens: int = 6000  # the prompt's budget for a conversation's history
    chat_wait_seconds: float = 30.0  # how long a POST without ``stream`` waits for the reply

    @property
    def is_embedded(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def max_wait_seconds(self) -> float:
        """The longest a request may wait on a job: well inside gunicorn's worker timeout
        (which `baton api` sets from the same setting), so a wait never kills a worker."""
        return max(self.api_timeout - 10, 1)

    @property
    def broker_is_filesystem(self) -> bool:
        return self.celery_broker_url.startswith("filesystem")

    def provider_key(self, key_env: str) -> str:
        """The key held by environment variable ``key_env`` (read once, at load)."""
        return self.provider_keys.get(key_env.upper(), "")


def _prices(raw: str) -> dict[str, dict[str, Decimal]]:
    """Prices per 1M tokens, USD: {"model": {"input": "2.50", "output": "10.00"}}."""
    if not raw:
        return {}
    data = _json_or_file(raw)
    if not isinstance(data, dict):
        raise ValueError("BATON_PRICE_TABLE must be a JSON object")
    return _price_entries(data)


def _json_or_file(raw: str) -> object:
    raw = raw.strip()
    return json.loads(raw if raw[:1] in "[{" else Path(raw).read_text())


def _configured_providers(raw: str) -> tuple[ConfiguredProvider, ...]:
    """BATON_PROVIDERS: JSON (or a file path) of ``{"name": {"base_url", "models", ...}}``
    or a list of such objects with a ``name``. Refused at start-up when malformed."""
    if not raw.strip():
        return ()
    data = _json_or_file(raw)
    if isinstance(data, dict):
        data = [{"name": name, **(entry or {})} for name, entry in data.items()]
    if not isinstance(data, list):
        raise ValueError("BATON_PROVIDERS must be a JSON object or list")
    out = []
    for entry in data:
        if not isinstance(entry, dict):
            raise ValueError("BATON_PROVIDERS: each provider must be a JSON object")
        name = str(entry.get("name", ""))
        where = f"BATON_PROVIDERS[{name or '?'}]"
        if not PROVIDER_NAME.match(name):
            raise ValueError(f"{where}: name must match {PROVIDER_NAME.pattern}")
        base_url = str(entry.get("base_url") or "")
        if not base_url.startswith(("http://", "https://")):
            raise ValueError(f"{where}: base_url must be an http(s) URL")
        models = entry.get("models")
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m for m in models)
        ):
            raise ValueError(f"{where}: models must be a non-empty list of names")
        unknown = set(entry) - {
            "name", "base_url", "api_key_env", "models", "timeout_seconds", "prices",
            "max_tokens_param",
        }  # fmt: skip
        if unknown:
            raise ValueError(f"{where}: unknown keys {sorted(unknown)}")
        key_env = entry.get("api_key_env") or None
        out.append(
            ConfiguredProvider(
                name=name,
                base_url=base_url.rstrip("/"),
                api_key_env=str(key_env).upper() if key_env else None,
                models=tuple(models),
                timeout_seconds=float(entry.get("timeout_seconds", 60)),
                prices=_price_entries(entry.get("prices") or {}),
                max_tokens_param=entry.get("max_tokens_param"),
            )
        )
    return tuple(out)


def _price_entries(data: dict) -> dict[str, dict[str, Decimal]]:
    return {
        model: {k: Decimal(str(v)) for k, v in price.items() if k in {"input", "output"}}
        for model, price in data.items()
    }


def _pem(raw: str) -> str:
    """GITHUB_APP_PRIVATE_KEY: the PEM itself, or the path of a file holding it."""
    raw = raw.strip()
    if not raw or raw.startswith("-----BEGIN"):
        return raw.replace("\\n", "\n")
    return Path(raw).read_text()


def _embedded_encryption_key(home: Path) -> str:
    """The embedded mode's Fernet key, made once and kept in BATON_HOME (mode 0600), so
    secrets at rest (2FA, integration keys) work on a first run with no configuration.
    With services (DATABASE_URL set), BATON_ENCRYPTION_KEY must be given."""
    path = home / "encryption.key"
    home.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # made by an earlier run, or by a sibling process just now
        for _ in range(50):
            if key := path.read_text().strip():
                return key
            time.sleep(0.02)  # the sibling is writing it
        raise RuntimeError(f"{path} is empty: delete it to make a new key") from None
    with os.fdopen(fd, "w") as out:
        out.write(base64.urlsafe_b64encode(os.urandom(32)).decode())
    return path.read_text().strip()


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    env = os.environ
    home = _home()
    default_price = env.get("BATON_DEFAULT_PRICE", "")
    step_time_limit = int(env.get("BATON_STEP_TIME_LIMIT", "120"))
    configured = _configured_providers(env.get("BATON_PROVIDERS", ""))
    key_names = {"OPENAI_API_KEY", "GROQ_API_KEY"} | {
        p.api_key_env for p in configured if p.api_key_env
    }
    return Settings(
        home=home,
        database_url=env.get("DATABASE_URL") or f"sqlite:///{home / 'baton.db'}",
        celery_broker_url=env.get("CELERY_BROKER_URL") or "filesystem://",
        celery_result_backend=env.get("CELERY_RESULT_BACKEND")
        or f"db+sqlite:///{home / 'celery-results.db'}",
        redis_url=env.get("REDIS_URL", ""),
        jwt_secret_key=env.get("JWT_SECRET_KEY")
        or "baton-dev-secret-change-me-in-production-0123456789",
        encryption_key=env.get("BATON_ENCRYPTION_KEY")
        or ("" if env.get("DATABASE_URL") else _embedded_encryption_key(home)),
        openai_api_key=env.get("OPENAI_API_KEY", ""),
        groq_api_key=env.get("GROQ_API_KEY", ""),
        default_provider=env.get("BATON_DEFAULT_PROVIDER", ""),
        default_model=env.get("BATON_DEFAULT_MODEL", ""),
        default_max_tokens=int(env.get("BATON_DEFAULT_MAX_TOKENS", "1024")),
        access_token_minutes=int(env.get("BATON_ACCESS_TOKEN_MINUTES", "15")),
        refresh_token_days=int(env.get("BATON_REFRESH_TOKEN_DAYS", "30")),
        login_rate_limit=env.get("BATON_LOGIN_RATE_LIMIT", "5 per minute"),
        api_rate_limit=env.get("BATON_API_RATE_LIMIT", "600 per minute"),
        max_body_bytes=int(env.get("BATON_MAX_BODY_BYTES", str(1024 * 1024))),
        task_queue_prefix=env.get("BATON_QUEUE_PREFIX", "baton"),
        # The soft limit leaves the step time to write its answer: a fifth of the hard
        # limit, at most 30 s (issue 8: the default hard limit is 120 s).
        step_soft_time_limit=max(step_time_limit - min(30, step_time_limit // 5), 1),
        step_time_limit=step_time_limit,
        # Clock order (DESIGN.md): hard time limit < visibility timeout < sweeper age.
        visibility_timeout=int(env.get("BATON_VISIBILITY_TIMEOUT", str(step_time_limit + 30))),
        price_table=_prices(env.get("BATON_PRICE_TABLE", "")),
        default_price=(
            {k: Decimal(str(v)) for k, v in json.loads(default_price).items()}
            if default_price
            else None
        ),
        flower_basic_auth=env.get("FLOWER_BASIC_AUTH", ""),
        configured_providers=configured,
        provider_keys={name: env.get(name, "") for name in key_names},
        redis_prefix=env.get("BATON_REDIS_PREFIX") or "baton",
        breaker_failures=max(1, int(env.get("BATON_BREAKER_FAILURES", "5"))),
        breaker_window_seconds=float(env.get("BATON_BREAKER_WINDOW_SECONDS", "60")),
        breaker_cooldown_seconds=float(env.get("BATON_BREAKER_COOLDOWN_SECONDS", "30")),
        stream_event_chars=int(env.get("BATON_STREAM_EVENT_CHARS", "200")),
        stream_event_seconds=float(env.get("BATON_STREAM_EVENT_SECONDS", "0.25")),
        worker_heartbeat_seconds=float(env.get("BATON_WORKER_HEARTBEAT_SECONDS", "10")),
        # Issue 8
        stall_seconds=int(env.get("BATON_STALL_SECONDS", "180")),
        reaper_interval_seconds=float(env.get("BATON_REAPER_INTERVAL_SECONDS", "30")),
        step_max_deliveries=max(1, int(env.get("BATON_STEP_MAX_DELIVERIES", "3"))),
        db_retry_seconds=float(env.get("BATON_DB_RETRY_SECONDS", "60")),
        # Issue 13
        tool_max_turns=max(1, int(env.get("BATON_TOOL_MAX_TURNS", "6"))),
        tool_max_calls=max(0, int(env.get("BATON_TOOL_MAX_CALLS", "12"))),
        tool_timeout_seconds=float(env.get("BATON_TOOL_TIMEOUT_SECONDS", "10")),
        tool_result_chars=int(env.get("BATON_TOOL_RESULT_CHARS", "4000")),
        external_poll_seconds=float(env.get("BATON_EXTERNAL_POLL_SECONDS", "1")),
        external_poll_max_seconds=float(env.get("BATON_EXTERNAL_POLL_MAX_SECONDS", "30")),
        external_timeout_seconds=float(env.get("BATON_EXTERNAL_TIMEOUT_SECONDS", "1800")),
        external_request_seconds=float(env.get("BATON_EXTERNAL_REQUEST_SECONDS", "10")),
        external_hold=Decimal(env.get("BATON_EXTERNAL_HOLD", "0.01")),
        # Issue 9
        org_rate_limit=env.get("BATON_ORG_RATE_LIMIT") or "3000 per minute",
        build_rate_limit=env.get("BATON_BUILD_RATE_LIMIT") or "10 per minute",
        analysis_rate_limit=env.get("BATON_ANALYSIS_RATE_LIMIT") or "5 per minute",
        two_factor_rate_limit=env.get("BATON_2FA_RATE_LIMIT") or "5 per minute",
        idempotency_ttl_seconds=int(env.get("BATON_IDEMPOTENCY_TTL_SECONDS") or "86400"),
        idempotency_lock_seconds=int(env.get("BATON_IDEMPOTENCY_LOCK_SECONDS") or "300"),
        default_api_quota=(
            int(env["BATON_DEFAULT_API_QUOTA"]) if env.get("BATON_DEFAULT_API_QUOTA") else None
        ),
        # Issue 8 (operations)
        log_format=(env.get("BATON_LOG_FORMAT") or "json").lower(),
        log_level=(env.get("BATON_LOG_LEVEL") or "INFO").upper(),
        metrics_dir=env.get("PROMETHEUS_MULTIPROC_DIR", ""),
        worker_metrics_port=int(env.get("BATON_WORKER_METRICS_PORT") or 0),
        worker_metrics_host=env.get("BATON_WORKER_METRICS_HOST") or "0.0.0.0",
        api_timeout=max(int(env.get("BATON_API_TIMEOUT") or 60), 10),
        broker_timeout_seconds=float(env.get("BATON_BROKER_TIMEOUT_SECONDS") or 3),
        db_connect_timeout=int(env.get("BATON_DB_CONNECT_TIMEOUT") or 5),
        unavailable_retry_after=int(env.get("BATON_RETRY_AFTER_SECONDS") or 5),
        # Issues 9 (item 10) and 12.
        allowed_private_hosts=env.get("BATON_ALLOWED_PRIVATE_HOSTS", ""),
        webhook_timeout_seconds=float(env.get("BATON_WEBHOOK_TIMEOUT_SECONDS", "10")),
        webhook_max_attempts=max(1, int(env.get("BATON_WEBHOOK_MAX_ATTEMPTS", "8"))),
        webhook_backoff_seconds=float(env.get("BATON_WEBHOOK_BACKOFF_SECONDS", "2")),
        webhook_backoff_max_seconds=float(env.get("BATON_WEBHOOK_BACKOFF_MAX_SECONDS", "3600")),
        webhook_disable_after_failures=max(
            1, int(env.get("BATON_WEBHOOK_DISABLE_AFTER_FAILURES", "5"))
        ),
        webhook_secret_grace_hours=float(env.get("BATON_WEBHOOK_SECRET_GRACE_HOURS", "24")),
        webhook_resend_after_seconds=float(env.get("BATON_WEBHOOK_RESEND_AFTER_SECONDS", "300")),
        github_webhook_secret=env.get("GITHUB_WEBHOOK_SECRET", ""),
        github_api_url=(env.get("GITHUB_API_URL") or "https://api.github.com").rstrip("/"),
        github_app_private_key=_pem(env.get("GITHUB_APP_PRIVATE_KEY", "")),
        github_timeout_seconds=float(env.get("GITHUB_TIMEOUT_SECONDS", "15")),
        # Issue 10: live streams.
        stream_heartbeat_seconds=float(env.get("BATON_STREAM_HEARTBEAT_SECONDS", "15")),
        stream_poll_seconds=float(env.get("BATON_STREAM_POLL_SECONDS", "1")),
        stream_buffer_messages=max(10, int(env.get("BATON_STREAM_BUFFER_MESSAGES", "1000"))),
        stream_max_per_user=max(1, int(env.get("BATON_STREAM_MAX_PER_USER", "20"))),
        # Issue 9 (API contract)
        max_url_chars=int(env.get("BATON_MAX_URL_CHARS", "4096")),
        chat_max_message_chars=max(1, int(env.get("BATON_CHAT_MAX_MESSAGE_CHARS", "32000"))),
        chat_history_tokens=max(100, int(env.get("BATON_CHAT_HISTORY_TOKENS", "6000"))),
        chat_wait_seconds=max(0.0, float(env.get("BATON_CHAT_WAIT_SECONDS", "30"))),
    )


def reset_settings_cache() -> None:
    """For tests and the CLI, which set environment variables before building apps."""
    get_settings.cache_clear()
