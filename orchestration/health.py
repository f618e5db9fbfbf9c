"""Dependency probes for the health endpoints: database, Celery broker, Redis.

Each probe is bounded (about 2 s) and answers a boolean; none raises. Worker and provider
health (breaker state, live workers) belong to the workers and are not probed here.
"""

from __future__ import annotations

import logging
import os
import resource
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from importlib.metadata import PackageNotFoundError, version

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import utcnow

log = logging.getLogger(__name__)

PROBE_TIMEOUT_SECONDS = 2.0
CONNECTED, UNAVAILABLE, NOT_CONFIGURED = "connected", "unavailable", "not_configured"

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

    @property
    def healthy(self) -> bool:
        return self.status == "healthy"


def health_report(
    sessions: sessionmaker[Session], *, broker_url: str | None = None, redis_url: str | None = None
) -> HealthReport:
    database = CONNECTED if check_database(sessions) else UNAVAILABLE
    broker = CONNECTED if check_broker(broker_url) else UNAVAILABLE
    redis_state = check_redis(redis_url)
    ok = database == CONNECTED and broker == CONNECTED and redis_state != UNAVAILABLE
    return HealthReport(
        status="healthy" if ok else "degraded",
        timestamp=utcnow(),
        uptime_seconds=uptime_seconds(),
        version=baton_version(),
        database=database,
        broker=broker,
        redis=redis_state,
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
