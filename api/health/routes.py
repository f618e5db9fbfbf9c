"""GET /health, /health/live, /health/ready, /health/status: public, never rate limited."""

from __future__ import annotations

from flask import Response
from flask.views import MethodView
from flask_smorest import Blueprint

from api.extensions import limiter
from api.health.schemas import HealthSchema, ProbeSchema, StatusSchema
from api.security import sessions
from models import utcnow
from orchestration import health

blp = Blueprint("health", __name__, url_prefix="/api/v1/health", description="Health probes")
# Load balancers and orchestrators poll these; a 429 would read as "down".
limiter.exempt(blp)


@blp.after_app_request
def _count_request(response: Response) -> Response:
    health.record_request()
    return response


def _state(value: str) -> str:
    """Seed 004 component vocabulary."""
    return {"connected": "healthy", "unavailable": "unhealthy"}.get(value, value)


def _providers(report: health.HealthReport) -> dict:
    return {
        name: {"status": p.status, "breaker": p.breaker, "detail": p.detail}
        for name, p in (report.providers or {}).items()
    }


def _workers(report: health.HealthReport) -> dict:
    workers = report.workers
    return {"status": workers.status, "count": workers.count} if workers else {}


@blp.route("")
class Health(MethodView):
    @blp.response(200, HealthSchema)
    def get(self):
        """Overall status and each dependency (database, broker, redis), live workers, and
        each provider: available, degraded (breaker half-open), unavailable (open) or
        not_configured (no key); always 200."""
        report = health.health_report(sessions())
        return {
            "status": report.status,
            "timestamp": report.timestamp,
            "uptime": health.human_uptime(report.uptime_seconds),
            "uptime_seconds": int(report.uptime_seconds),
            "version": report.version,
            "dependencies": {
                "database": report.database,
                "broker": report.broker,
                "redis": report.redis,
            },
            "workers": _workers(report),
            "providers": _providers(report),
        }


@blp.route("/live")
class Live(MethodView):
    @blp.response(200, ProbeSchema)
    def get(self):
        """The process is up and answering."""
        return {"status": "alive", "timestamp": utcnow()}


@blp.route("/ready")
class Ready(MethodView):
    @blp.response(200, ProbeSchema)
    @blp.alt_response(503, schema=ProbeSchema, description="The database is not reachable")
    def get(self):
        """200 when the database answers, else 503 (take this instance out of rotation)."""
        ready = health.is_ready(sessions())
        body = {
            "status": "ready" if ready else "not_ready",
            "timestamp": utcnow(),
            "checks": {"database": "connected" if ready else "unavailable"},
        }
        return body, 200 if ready else 503


@blp.route("/status")
class Status(MethodView):
    @blp.response(200, StatusSchema)
    def get(self):
        """Seed 004 system status: components and process metrics."""
        report = health.health_report(sessions())
        return {
            "status": "operational" if report.healthy else "degraded",
            "timestamp": report.timestamp,
            "version": report.version,
            "components": {
                "api": "healthy",
                "database": _state(report.database),
                "broker": _state(report.broker),
                "cache": _state(report.redis),
            },
            "workers": _workers(report),
            "providers": _providers(report),
            "metrics": health.process_metrics(),
        }
