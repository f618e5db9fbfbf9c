"""/analytics/performance: figures from real measurements of the API (Redis aggregates)."""

from __future__ import annotations

import threading
import time

import pytest

from orchestration import performance
from tests import factories
from tests.test_auth import assert_error

# A fixed minute of its own, so the other tests' requests never land in it.
MINUTE_START = 1_000_000 * 60.0


def test_aggregates_give_percentiles_error_rates_and_peak():
    # 100 requests in one minute: 1..100 ms; 7 answered 4xx, 2 answered 5xx; 30 of them
    # in second 5 (the peak), the rest one a second after.
    for i in range(1, 101):
        status = 404 if i <= 7 else 503 if i <= 9 else 200
        second = 5 if i <= 30 else 5 + (i - 30) % 50 + 1
        performance.record_request(status, float(i), now=MINUTE_START + second)
    report = performance.performance_report(1, now=MINUTE_START + 59)
    assert report.requests == 100
    for name, exact in (("p50", 50), ("p95", 95), ("p99", 99)):
        assert exact <= report.response_times[name] <= exact * 1.1, name
    assert report.error_rates == {"4xx": 7.0, "5xx": 2.0}
    assert report.throughput["peak_rps"] == 30
    assert report.throughput["requests_per_second"] == pytest.approx(100 / 59, rel=0.01)


def test_a_request_makes_no_round_trip_and_reaches_redis_within_the_flush_period():
    from orchestration.redis_store import key, redis_client

    client = redis_client()
    minute = int(MINUTE_START // 60) + 7
    client.delete(key("perf", str(minute)))
    calls = []
    real, this_thread = client.execute_command, threading.get_ident()

    def counted(*args, **kwargs):  # this thread's commands (not the flushing thread's)
        if threading.get_ident() == this_thread:
            calls.append(args)
        return real(*args, **kwargs)

    client.execute_command = counted
    try:
        performance.record_request(200, 3.0, now=minute * 60 + 4)
        performance.record_request(500, 3.0, now=minute * 60 + 4)
        assert calls == []  # the request only counted in its process
    finally:
        del client.execute_command
    deadline = time.monotonic() + performance.FLUSH_SECONDS * 20
    while not client.hgetall(key("perf", str(minute))) and time.monotonic() < deadline:
        time.sleep(0.05)
    row = {k.decode(): int(v) for k, v in client.hgetall(key("perf", str(minute))).items()}
    bucket = f"b{performance._bucket(3.0)}"
    assert row == {"n": 2, "s2xx": 1, "s5xx": 1, bucket: 2, "p4": 2}
    assert 0 < client.ttl(key("perf", str(minute))) <= performance.KEY_TTL_SECONDS


def test_a_quiet_window_has_no_percentiles():
    report = performance.performance_report(5, now=MINUTE_START - 3600)
    assert report.requests == 0 and report.response_times["p50"] is None
    assert report.throughput == {"requests_per_second": 0.0, "peak_rps": 0}


def test_endpoint_reports_the_requests_it_measured(client, db, app):
    org = factories.organization(db)
    headers = factories.auth_headers(app, factories.user(db, org, role="viewer"))
    db.commit()
    for _ in range(5):
        assert client.get("/api/v1/agents", headers=headers).status_code == 200
    assert client.get("/api/v1/agents/not-a-uuid", headers=headers).status_code == 404
    response = client.get("/api/v1/analytics/performance?minutes=5", headers=headers)
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["requests"] >= 6 and body["window_minutes"] == 5
    assert 0 < body["response_times"]["p50"] <= body["response_times"]["p99"]
    assert body["error_rates"]["4xx"] > 0
    assert body["throughput"]["requests_per_second"] > 0 and body["throughput"]["peak_rps"] >= 1
    usage = body["resource_usage"]
    assert set(usage) == {"cpu_utilization", "memory_usage", "disk_usage"}
    assert 0 < usage["memory_usage"] <= 100 and 0 < usage["disk_usage"] <= 100
    assert body["process"]["rss_bytes"] > 0 and body["process"]["cpu_seconds"] > 0


def test_requests_refused_before_their_view_are_measured(sessions, db, monkeypatch):
    """A 429 from a rate limit and a 422 from the edge's checks are answers too."""
    from tests.conftest import _make_app

    app = _make_app(sessions, BATON_USER_RATE_LIMIT="2 per minute")
    headers = factories.auth_headers(app, factories.user(db, factories.organization(db)))
    db.commit()
    measured = []
    record = performance.record_request
    monkeypatch.setattr(
        performance,
        "record_request",
        lambda status, elapsed_ms: measured.append(status) or record(status, elapsed_ms),
    )
    client = app.test_client()
    statuses = [client.get("/api/v1/agents?name=a%00b", headers=headers).status_code]
    statuses += [client.get("/api/v1/agents", headers=headers).status_code for _ in range(3)]
    assert statuses == [422, 200, 200, 429]  # the edge refuses before a bucket counts
    assert measured == statuses


def test_endpoint_checks_its_input(client, db, app):
    org = factories.organization(db)
    headers = factories.auth_headers(app, factories.user(db, org))
    db.commit()
    url = "/api/v1/analytics/performance"
    assert_error(
        client.get(f"{url}?minutes=0", headers=headers), 422, "VALIDATION_ERROR", "minutes"
    )
    assert_error(
        client.get(f"{url}?minutes=x", headers=headers), 422, "VALIDATION_ERROR", "minutes"
    )
    assert client.get(url).status_code == 401


def test_baton_api_processes_share_one_measurement(database_url, app, tmp_path):
    """`baton api` (gunicorn, two worker processes): whichever process answers, it reports
    the requests both served, because the aggregates live in Redis."""
    import os
    import subprocess
    import sys

    import httpx

    from models.db import session_factory, transaction
    from tests.conftest import ROOT
    from tests.processes import free_port

    with transaction(session_factory(database_url)) as s:
        org = factories.organization(s)
        headers = factories.auth_headers(app, factories.user(s, org))
    port = free_port()
    api = subprocess.Popen(
        [sys.executable, "-m", "baton.cli", "api", "--host", "127.0.0.1", "--port", str(port)],
        cwd=ROOT, env={**os.environ, "BATON_HOME": str(tmp_path)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{base}/health/live").status_code == 200:
                    break
            except httpx.HTTPError:
                assert time.monotonic() < deadline, "baton api did not come up"
                time.sleep(0.3)
        # The widest window: its oldest minute is before this run, so a minute ending
        # between the reads drops nothing the other tests counted (minutes=5 could).
        report = f"{base}/analytics/performance?minutes={performance.MAX_WINDOW_MINUTES}"
        before = httpx.get(report, headers=headers).json()
        for _ in range(40):  # a new connection each: both processes take some
            assert httpx.get(f"{base}/health/live").status_code == 200
        # Each process adds its counts to Redis every FLUSH_SECONDS (and before it reports).
        time.sleep(performance.FLUSH_SECONDS * 4)
        pids = set()
        for _ in range(6):
            body = httpx.get(report, headers=headers).json()
            assert body["requests"] >= before["requests"] + 40
            pids.add(body["process"]["pid"])
        assert api.pid not in pids  # answered by gunicorn's workers, not its arbiter
    finally:
        api.terminate()
        api.wait(timeout=30)
