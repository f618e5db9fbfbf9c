"""Prometheus metrics and JSON logs from the production processes: the API under gunicorn
(two workers, multiprocess mode) and a `baton worker` that serves its pool's metrics."""

from __future__ import annotations

import contextlib
import json
import re
from typing import Any

import httpx
import pytest

from tests.conftest import RUN_ID, queue_prefix
from tests.helpers import TERMINAL, live_tenant
from tests.processes import free_port, poll, wait_http


def samples(text: str, name: str, **labels: str) -> float:
    """The sum of a metric's samples whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        match = re.match(rf"^{name}\{{(.*)\}} (\S+)$", line)
        if match and all(f'{k}="{v}"' in match.group(1) for k, v in labels.items()):
            total += float(match.group(2))
    return total


def json_lines(text: str) -> list[dict[str, Any]]:
    out = []
    for line in text.splitlines():
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
    return out


@pytest.fixture
def tenant(live_client: Any, database_url: str) -> dict[str, Any]:
    return live_tenant(live_client.application, database_url)


def test_api_metrics_and_access_log_under_gunicorn(scripts, tmp_path, tenant):
    port = free_port()
    api = scripts(
        ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        tmp_path / "api.log",
    )
    base = f"http://127.0.0.1:{port}"
    wait_http(f"{base}/api/v1/health/live", api)
    request_ids = []
    with httpx.Client(base_url=base, timeout=30) as client:
        for _ in range(6):  # fresh connections land on either worker
            response = client.get("/api/v1/jobs", headers=tenant["headers"])
            assert response.status_code == 200
            request_ids.append(response.headers["X-Request-ID"])
        missing = client.get(f"/api/v1/jobs/{tenant['org_id']}", headers=tenant["headers"])
        assert missing.status_code == 404
    scrape = httpx.get(f"{base}/metrics").text

    counted = samples(
        scrape, "baton_http_requests_total", route="/api/v1/jobs", method="GET", status="200"
    )
    assert counted == 6
    assert samples(scrape, "baton_http_requests_total", route="/api/v1/jobs/<uuid:job_id>",
                   status="404") == 1  # fmt: skip
    assert samples(scrape, "baton_http_request_duration_seconds_count", route="/api/v1/jobs") == 6
    assert 'le="0.1"' in scrape

    poll(lambda: request_ids[-1] in api.text(), 30, "the access log line")
    access = [line for line in json_lines(api.text()) if line.get("logger") == "gunicorn.access"]
    logged = {line.get("request_id") for line in access}
    assert set(request_ids) <= logged
    line = next(line for line in access if line.get("request_id") == request_ids[0])
    assert line["status"] == "200" and line["path"] == "/api/v1/jobs" and line["level"] == "INFO"


def test_worker_metrics_and_job_logs_after_a_job(scripts, tmp_path, tenant):
    prefix = queue_prefix("m")  # this test's worker alone reads these queues
    metrics_port, api_port = free_port(), free_port()
    env = {"BATON_QUEUE_PREFIX": prefix, "BATON_WORKER_METRICS_PORT": str(metrics_port)}
    worker = scripts(
        ["worker", "-n", f"metrics-{RUN_ID}@%h", "-c", "2", "--without-gossip", "--without-mingle"],
        tmp_path / "worker.log",
        env,
    )
    api = scripts(
        ["api", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"],
        tmp_path / "api.log",
        {"BATON_QUEUE_PREFIX": prefix},
    )
    base = f"http://127.0.0.1:{api_port}"
    wait_http(f"{base}/api/v1/health/live", api)
    worker.wait_for(" ready.")
    wait_http(f"http://127.0.0.1:{metrics_port}/metrics", worker)

    accepted = httpx.post(
        f"{base}/api/v1/builds",
        headers=tenant["headers"],
        json={"project_name": "shop", "goal": "Add auth", "parameters": {"components": ["a", "b"]}},
        timeout=30,
    )
    assert accepted.status_code == 202, accepted.text
    job_id = accepted.json()["job_id"] if "job_id" in accepted.json() else accepted.json()["id"]
    location = accepted.headers["Location"]
    body: dict[str, Any] = {}

    def finished() -> bool:
        nonlocal body
        body = httpx.get(f"{base}{location}" if location.startswith("/") else location,
                         headers=tenant["headers"], timeout=30).json()  # fmt: skip
        return body.get("status") in TERMINAL

    poll(finished, 120, "the build to finish")
    assert body["status"] == "completed", body

    def scraped() -> str:
        return httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).text

    # The finish task's commit lands just before its postrun: poll briefly.
    poll(lambda: samples(scraped(), "baton_jobs_total", kind="build", status="completed") == 1,
         30, "the completed job in the worker's metrics")  # fmt: skip
    scrape = scraped()
    assert samples(scrape, "baton_jobs_total", kind="build", status="running") == 1
    steps = samples(scrape, "baton_steps_total", kind="build", status="completed")
    assert steps == 5  # plan, two generate steps, test, review: each once
    assert samples(scrape, "baton_provider_call_seconds_count", provider="sim", outcome="ok") >= 5
    assert samples(scrape, "baton_budget_holds_total", outcome="held") >= 5
    assert samples(scrape, "baton_celery_tasks_total", task="baton.step.run", state="SUCCESS") >= 5

    lines = json_lines(worker.text())
    mine = [line for line in lines if line.get("job_id") == str(job_id)]
    assert mine, worker.text()[-3000:]
    assert any(line.get("step_id") for line in mine)
    assert all(line.get("organization_id") == str(tenant["org_id"]) for line in mine)
    assert all({"time", "level", "logger", "message"} <= set(line) for line in mine)
