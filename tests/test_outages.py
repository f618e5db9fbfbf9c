"""The API under gunicorn (`baton api`) when PostgreSQL, the broker or Redis is down: a 503
SERVICE_UNAVAILABLE with Retry-After in bounded time, never a 500, no orphan job; and a
request that waits on a job never outlives gunicorn's worker timeout."""

from __future__ import annotations

import json
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from models import Job
from models.db import session_factory, transaction
from tests.conftest import queue_prefix
from tests.helpers import live_tenant
from tests.processes import free_port, poll, wait_http
from tests.tcp_proxy import TcpProxy


def start_api(scripts: Any, tmp_path: Any, env: dict[str, str], *extra: str) -> str:
    port = free_port()
    script = scripts(
        ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra],
        tmp_path / f"api-{port}.log",
        env,
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/v1/health/live", script)
    return url


def assert_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"].isdigit()
    error = response.json()["error"]
    assert error["code"] == "SERVICE_UNAVAILABLE"
    assert error["request_id"] == response.headers["X-Request-ID"]


@pytest.fixture
def tenant(live_client: Any, database_url: str) -> dict[str, Any]:
    return live_tenant(live_client.application, database_url)


def test_database_outage_is_a_503_and_the_api_recovers(scripts, tmp_path, tenant, database_url):
    url = sa.engine.make_url(database_url)
    proxy = TcpProxy(url.host or "127.0.0.1", url.port or 5432)
    try:
        through_proxy = url.set(host="127.0.0.1", port=proxy.port)
        api = start_api(
            scripts, tmp_path,
            {"DATABASE_URL": through_proxy.render_as_string(hide_password=False),
             "BATON_DB_CONNECT_TIMEOUT": "2"},
        )  # fmt: skip
        headers = tenant["headers"]
        assert httpx.get(f"{api}/api/v1/jobs", headers=headers).status_code == 200

        proxy.cut()
        for _ in range(3):  # every pooled connection is dead, and no new one gets through
            cut = httpx.get(f"{api}/api/v1/jobs", headers=headers, timeout=30)
            assert_unavailable(cut)
        # The API's own log line (JSON) carries the request id the client was given.
        log = next(tmp_path.glob("api-*.log"))
        poll(lambda: cut.headers["X-Request-ID"] in log.read_text(), 30, "the log line")
        lines = [json.loads(x) for x in log.read_text().splitlines() if x.startswith("{")]
        (warning,) = [
            x for x in lines
            if x.get("request_id") == cut.headers["X-Request-ID"] and x["logger"] == "api.errors"
        ]  # fmt: skip
        assert warning["level"] == "WARNING" and "unavailable" in warning["message"]
        assert_unavailable(
            httpx.post(
                f"{api}/api/v1/tasks", headers=headers, json={"description": "x"}, timeout=30
            )
        )
        login = httpx.post(
            f"{api}/api/v1/auth/login", json={"email": "a@b.example", "password": "x"}, timeout=30
        )
        assert_unavailable(login)

        proxy.restore()
        poll(
            lambda: httpx.get(f"{api}/api/v1/jobs", headers=headers, timeout=30).status_code == 200,
            60,
            "the API to reach the database again",
        )
    finally:
        proxy.close()


def _jobs_of(database_url: str, org_id: uuid.UUID) -> list[Job]:
    with transaction(session_factory(database_url)) as session:
        return list(session.scalars(sa.select(Job).where(Job.organization_id == org_id)))


def _submit(api: str, headers: dict[str, str], key: str) -> httpx.Response:
    return httpx.post(
        f"{api}/api/v1/tasks",
        headers={**headers, "Idempotency-Key": key},
        json={"description": "Summarise the outage"},
        timeout=60,
    )


def test_unreachable_broker_is_a_prompt_503_without_an_orphan_job(
    scripts, tmp_path, tenant, database_url
):
    closed = free_port()
    api = start_api(
        scripts, tmp_path,
        {"CELERY_BROKER_URL": f"redis://127.0.0.1:{closed}/0", "BATON_BROKER_TIMEOUT_SECONDS": "1"},
    )  # fmt: skip
    started = time.monotonic()
    assert_unavailable(_submit(api, tenant["headers"], "outage-1"))
    assert time.monotonic() - started < 15
    (job,) = _jobs_of(database_url, tenant["org_id"])
    # Decision (docs/decisions.md): the row stays as a failed job saying why, and frees its
    # Idempotency-Key so the client's retry submits anew.
    assert job.status == "failed" and "queue is unavailable" in job.error
    assert job.idempotency_key is None


@pytest.fixture
def paused_redis(tmp_path) -> Iterator[tuple[int, subprocess.Popen]]:
    port = free_port()
    proc = subprocess.Popen(
        ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
         "--appendonly", "no", "--dir", str(tmp_path)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    import redis

    poll(lambda: _pings(redis.Redis(port=port)), 30, "redis-server")
    yield port, proc
    proc.send_signal(signal.SIGCONT)
    proc.terminate()
    proc.wait(timeout=20)


def _pings(client: Any) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


def test_paused_broker_is_a_bounded_503_then_submissions_resume(
    scripts, tmp_path, tenant, database_url, paused_redis
):
    port, redis_proc = paused_redis
    api = start_api(
        scripts, tmp_path,
        {"CELERY_BROKER_URL": f"redis://127.0.0.1:{port}/0", "BATON_BROKER_TIMEOUT_SECONDS": "1",
         # No worker reads these queues: the job just waits in the broker.
         "BATON_QUEUE_PREFIX": queue_prefix("paused")},
    )  # fmt: skip
    headers = tenant["headers"]
    assert _submit(api, headers, "before").status_code == 202

    redis_proc.send_signal(signal.SIGSTOP)
    started = time.monotonic()
    assert_unavailable(_submit(api, headers, "during"))
    assert time.monotonic() - started < 15

    redis_proc.send_signal(signal.SIGCONT)
    poll(lambda: _submit(api, headers, "during").status_code == 202, 60, "a submission")
    by_status = sorted(j.status for j in _jobs_of(database_url, tenant["org_id"]))
    assert by_status == ["failed", "queued", "queued"]


def test_unreachable_rate_limit_storage_falls_back_to_memory(scripts, tmp_path, tenant):
    closed = free_port()
    api = start_api(scripts, tmp_path, {"REDIS_URL": f"redis://127.0.0.1:{closed}/2"})
    for _ in range(3):
        response = httpx.get(f"{api}/api/v1/jobs", headers=tenant["headers"], timeout=30)
        assert response.status_code == 200, response.text
        assert response.headers["X-RateLimit-Limit"] == "600"
    log = next(tmp_path.glob("api-*.log")).read_text()
    assert "memory" in log.lower()


def test_waiting_on_a_run_never_outlives_the_worker_timeout(
    scripts, tmp_path, tenant, database_url
):
    # A sync gunicorn worker (one thread) is killed by its timeout mid-request; the wait
    # is clamped below it, so the caller gets its 202 and the worker lives.
    api = start_api(
        scripts, tmp_path,
        {"BATON_API_TIMEOUT": "12", "BATON_QUEUE_PREFIX": queue_prefix("nowk")},
        "--threads", "1",
    )  # fmt: skip
    started = time.monotonic()
    response = httpx.post(
        f"{api}/api/v1/agents/{tenant['agent_id']}/execute",
        headers=tenant["headers"],
        json={"input": "Summarise Q4", "wait_seconds": 60},
        timeout=60,
    )
    assert response.status_code == 202, response.text
    assert time.monotonic() - started < 12
    log = next(tmp_path.glob("api-*.log")).read_text()
    assert "WORKER TIMEOUT" not in log
