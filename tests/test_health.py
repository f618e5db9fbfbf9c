"""Health probes: public, never rate limited, honest about each dependency."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import sessionmaker

from models.db import make_engine
from orchestration import health


def test_health_reports_dependencies(client):
    response = client.get("/api/v1/health")
    assert response.status_code == 200
    body = response.get_json()
    assert body["status"] == "healthy", body
    assert body["dependencies"] == {
        "database": "connected",
        "broker": "connected",
        "redis": "connected",
    }
    assert body["version"]
    assert body["uptime"]
    assert datetime.fromisoformat(body["timestamp"].replace("Z", "+00:00")).tzinfo is not None


def test_live_and_ready(client):
    live = client.get("/api/v1/health/live")
    assert live.status_code == 200 and live.get_json()["status"] == "alive"
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_status_has_components_and_metrics(client):
    body = client.get("/api/v1/health/status").get_json()
    assert body["status"] == "operational"
    assert body["components"] == {
        "api": "healthy",
        "database": "healthy",
        "broker": "healthy",
        "cache": "healthy",
    }
    assert body["metrics"]["uptime_seconds"] >= 0
    assert body["metrics"]["requests_total"] >= 1


def test_health_is_public_and_not_rate_limited(client):
    for _ in range(30):
        response = client.get("/api/v1/health/live", environ_base={"REMOTE_ADDR": "10.9.9.9"})
        assert response.status_code == 200
    assert "X-RateLimit-Limit" not in response.headers


def _unreachable_database() -> sessionmaker:
    # A port nothing listens on: connection refused at once.
    engine = make_engine("postgresql+psycopg2://postgres@127.0.0.1:1/nowhere")
    return sessionmaker(bind=engine)


def test_ready_is_503_and_health_degraded_without_database(engine):
    from api import create_app

    app = create_app({"TESTING": True, "SESSION_FACTORY": _unreachable_database()})
    client = app.test_client()
    ready = client.get("/api/v1/health/ready")
    assert ready.status_code == 503
    assert ready.get_json()["checks"] == {"database": "unavailable"}
    body = client.get("/api/v1/health").get_json()
    assert body["status"] == "degraded"
    assert body["dependencies"]["database"] == "unavailable"
    assert client.get("/api/v1/health/live").status_code == 200
    assert client.get("/api/v1/health/status").get_json()["components"]["database"] == "unhealthy"


def test_broker_and_redis_probes_fail_fast(sessions):
    report = health.health_report(
        sessions, broker_url="redis://127.0.0.1:1/0", redis_url="redis://127.0.0.1:1/0"
    )
    assert report.database == "connected"
    assert report.broker == "unavailable"
    assert report.redis == "unavailable"
    assert report.status == "degraded"
    assert health.check_redis("") == "not_configured"


def test_without_redis_provider_health_says_breakers_are_per_process(monkeypatch):
    from baton.settings import reset_settings_cache

    monkeypatch.setenv("REDIS_URL", "")
    reset_settings_cache()
    try:
        providers = health.check_providers()
    finally:
        monkeypatch.undo()
        reset_settings_cache()
    assert providers["sim"].status == "available" and providers["sim"].breaker is None
    assert "each worker process" in providers["sim"].detail
    assert providers["openai"].status == "not_configured"
