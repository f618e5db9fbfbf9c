"""Dependency probes for the health endpoints: database, Celery broker, Redis, live
workers, and each provider (its circuit breaker's state, or its missing key).

Each probe is bounded (about 2 s at most) and never raises.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
import uuid
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import utcnow
from orchestration import breaker as breakers
from orchestration import integrations, model_catalog, redis_store

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
WORKER_PING_SECONDS = 1.0
CONNECTED, UNAVAILABLE, NOT_CONFIGURED = "connected", "unavailable", "not_configured"
AVAILABLE, DEGRADED, UNKNOWN = "available", "degraded", "unknown"

_started = time.monotonic()
_requests_lock = threading.Lock()
_requests_seen = 0  # requests this process answered (gunicorn: per worker process)


def baton_version() -> str:
    try:
        return version("baton")
    except PackageNotFoundError:  # running from a checkout that was not pip-installed
        return "0.1.0"


def uptime_seconds() -> float:
    return time.monotonic() - _started


def human_uptime(seconds: float) -> str:
    """Seed 000 shows "2h 15m"."""
    minutes, _ = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h {minutes}m"
    return f"{hours}h {minutes}m" if hours else f"{minutes}m {int(seconds) % 60}s"


def record_request() -> None:
    global _requests_seen
    with _requests_lock:
        _requests_seen += 1


# -- probes ---------------------------------------------------------------------------------


def check_database(sessions: sessionmaker[Session]) -> bool:
    try:
        with sessions() as session:
            session.execute(sa.text("SELECT 1"))
        return True
    except Exception as exc:  # any failure means "not reachable" to a probe
        log.warning("health: database probe failed: %s", exc)
        return False


def check_broker(url: str | None = None) -> bool:
    """Open (and close) one broker connection: one attempt, at most about 2 s."""
    from baton.celery_app import app

    try:
        with app.connection_for_write(url, connect_timeout=PROBE_TIMEOUT_SECONDS) as conn:
            conn.ensure_connection(max_retries=0, timeout=PROBE_TIMEOUT_SECONDS)
        return True
    except Exception as exc:
        log.warning("health: broker probe failed: %s", exc)
        return False


def check_redis(url: str | None = None) -> str:
    """Redis holds rate limits, breaker state and live events; optional in embedded mode."""
    url = url if url is not None else get_settings().redis_url
    if not url:
        return NOT_CONFIGURED
    import redis

    client = redis.Redis.from_url(
        url, socket_connect_timeout=PROBE_TIMEOUT_SECONDS, socket_timeout=PROBE_TIMEOUT_SECONDS
    )
    try:
        client.ping()
        return CONNECTED
    except Exception as exc:
        log.warning("health: redis probe failed: %s", exc)
        return UNAVAILABLE
    finally:
        client.close()


@dataclass(frozen=True)
class ProviderHealth:
    status: str  # available | degraded (half-open) | unavailable (open) | not_configured
    breaker: str | None = None  # closed | open | half_open
    detail: str | None = None


def check_providers() -> dict[str, ProviderHealth]:
    """The operator's providers (organizations' own integrations are theirs to see)."""
    settings = get_settings()
    out: dict[str, ProviderHealth] = {}
    identities: dict[str, str] = {}
    for name, spec in model_catalog.providers().items():
        if spec.key_env and not settings.provider_key(spec.key_env):
            detail = f"no API key: set {spec.key_env} (or an organization adds its own)"
            out[name] = ProviderHealth(NOT_CONFIGURED, detail=detail)
            continue
        if not settings.redis_url:
            detail = "no REDIS_URL: each worker process keeps its own circuit breaker"
            out[name] = ProviderHealth(AVAILABLE, None, detail)
            continue
        # sim: its default model's breaker (each sim fault model has its own).
        behaviour = spec.models[0] if name == "sim" else None
        identities[name] = breakers.identity("global", name, behaviour)
    try:
        snapshots = breakers.shared_breaker().snapshot(list(identities.values()))
    except Exception as exc:
        log.warning("health: breaker state unreadable: %s", exc)
        snapshots = {}
    for name, identity in identities.items():
        snap = snapshots.get(identity)
        if snap is None:
            out[name] = ProviderHealth(UNKNOWN, detail="circuit breaker state unreadable")
        elif snap.state is breakers.State.CLOSED:
            out[name] = ProviderHealth(AVAILABLE, snap.state.value)
        elif snap.state is breakers.State.HALF_OPEN or snap.probe_due:
            detail = f"recovering: one probe call allowed (last failure: {snap.last_error})"
            out[name] = ProviderHealth(DEGRADED, breakers.State.HALF_OPEN.value, detail)
        else:
            detail = (
                f"circuit open after {snap.failures} failures (last: {snap.last_error}); "
                f"next probe in {snap.retry_in_seconds:.0f}s"
            )
            out[name] = ProviderHealth(UNAVAILABLE, snap.state.value, detail)
    return dict(sorted(out.items()))


@dataclass(frozen=True)
class WorkersHealth:
    status: str  # available | unavailable | unknown
    count: int | None


def check_workers() -> WorkersHealth:
    """Workers whose heartbeat is recent (Redis); without Redis, a broker ping."""
    settings = get_settings()
    client = redis_store.redis_client()
    if client is not None:
        try:
            seen_after = time.time() - 3 * settings.worker_heartbeat_seconds
            count = client.zcount(redis_store.workers_key(), seen_after, "+inf")
        except Exception as exc:
            log.warning("health: worker heartbeats unreadable: %s", exc)
            return WorkersHealth(UNKNOWN, None)
        return WorkersHealth(AVAILABLE if count else UNAVAILABLE, int(count))
    from baton.celery_app import app

    try:
        replies = app.control.ping(timeout=WORKER_PING_SECONDS) or []
    except Exception as exc:
        log.warning("health: worker ping failed: %s", exc)
        return WorkersHealth(UNKNOWN, None)
    return WorkersHealth(AVAILABLE if replies else UNAVAILABLE, len(replies))


# -- reports --------------------------------------------------------------------------------


@dataclass(frozen=True)
class HealthReport:
    status: str  # healthy | degraded
    timestamp: datetime
    uptime_seconds: float
    version: str
    database: str
    broker: str
    redis: str
    workers: WorkersHealth | None = None
    providers: dict[str, ProviderHealth] | None = None
    # The asking organization's task servers (integrations.task_servers_state), when asked.
    task_servers: str | None = None

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


def health_report(
    sessions: sessionmaker[Session],
    *,
    broker_url: str | None = None,
    redis_url: str | None = None,
    include_workers_and_providers: bool = True,
    organization_id: uuid.UUID | None = None,
) -> HealthReport:
    """``status`` is this API instance's own ability to take jobs (database, broker,
    Redis); workers and providers are reported beside it, each with its own state: a
    provider outage is what fallback is for, and workers may be scaled to zero."""
    database = CONNECTED if check_database(sessions) else UNAVAILABLE
    broker = CONNECTED if check_broker(broker_url) else UNAVAILABLE
    redis_state = check_redis(redis_url)
    ok = database == CONNECTED and broker == CONNECTED and redis_state != UNAVAILABLE
    workers = providers = None
    if include_workers_and_providers:
        workers, providers = check_workers(), check_providers()
    task_servers = None
    if organization_id is not None and database == CONNECTED:
        with sessions() as session:
            task_servers = integrations.task_servers_state(session, organization_id=organization_id)
    return HealthReport(
        status="healthy" if ok else "degraded",
        timestamp=utcnow(),
        uptime_seconds=uptime_seconds(),
        version=baton_version(),
        database=database,
        broker=broker,
        redis=redis_state,
        workers=workers,
        providers=providers,
        task_servers=task_servers,
    )


def is_ready(sessions: sessionmaker[Session]) -> bool:
    """Ready = can serve requests, which all need the database."""
    return check_database(sessions)


def process_metrics() -> dict[str, float | int]:
    up = uptime_seconds()
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "uptime_seconds": int(up),
        "requests_total": _requests_seen,
        "requests_per_second": round(_requests_seen / up, 3) if up > 0 else 0.0,
        "max_rss_mb": round(usage.ru_maxrss / 1024, 1),  # ru_maxrss is KiB on Linux
        "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
