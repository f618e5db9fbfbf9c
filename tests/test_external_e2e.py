"""External task servers (seed 000's Task Master) through real workers: submit, poll by
Celery retry, fetch; failures, timeouts and cancel, against a server the test runs."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import BudgetReservation, Integration, JobEvent, UsageRecord
from models.db import session_factory, transaction
from tests.helpers import live_tenant, wait_terminal
from tests.task_server import TaskServer

pytestmark = pytest.mark.usefixtures("workers")
KEY = "tm-secret-key"


@pytest.fixture
def server():
    running = TaskServer(KEY)
    yield running
    running.close()


@pytest.fixture
def tenant(live_client, database_url, server):
    tenant = live_tenant(live_client.application, database_url)
    headers = tenant["headers"]
    response = live_client.post(
        "/api/v1/integrations",
        json={"name": "taskmaster", "kind": "task_server", "base_url": server.url, "api_key": KEY},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["kind"] == "task_server"
    assert response.get_json()["api_key_set"] is True
    # A limit, so every hold is a row the test can see settled or released.
    response = live_client.post(
        "/api/v1/budget/limits",
        json={"name": "l", "scope_type": "organization", "period": "daily", "amount_usd": "10",
              "action_on_exceed": "block"},
        headers=headers,
    )  # fmt: skip
    assert response.status_code == 201, response.get_json()
    return tenant


def external_agent(client, tenant, timeout_seconds=60) -> str:
    response = client.post(
        "/api/v1/agents",
        json={"name": "Task Master agent", "provider": "sim", "model": "sim/echo",
              "executor": "external", "task_server": "taskmaster",
              "timeout_seconds": timeout_seconds},
        headers=tenant["headers"],
    )  # fmt: skip
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def execute(client, tenant, agent_id, text):
    response = client.post(
        f"/api/v1/agents/{agent_id}/execute",
        json={"input": text, "wait_seconds": 60},
        headers=tenant["headers"],
    )
    assert response.status_code in (200, 202), response.get_json()
    body = response.get_json()
    if response.status_code == 202:
        job = wait_terminal(client, body["location"], tenant["headers"], timeout=90)
        body = {"run_id": body["run_id"], "status": job["status"], "error": job.get("error")}
    return body


def holds(database_url, job_id) -> list[str]:
    with transaction(session_factory(database_url)) as s:
        return list(
            s.scalars(sa.select(BudgetReservation.status).where(BudgetReservation.job_id == job_id))
        )


def event_types(database_url, job_id) -> list[str]:
    with transaction(session_factory(database_url)) as s:
        return list(
            s.scalars(
                sa.select(JobEvent.type).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
            )
        )


def test_submit_poll_fetch_completes_the_step(live_client, tenant, server, database_url):
    agent = external_agent(live_client, tenant)
    body = execute(live_client, tenant, agent, "finish the quarterly report")
    assert body["status"] == "completed", body
    run_id = uuid.UUID(body["run_id"])
    job = live_client.get(f"/api/v1/jobs/{run_id}", headers=tenant["headers"]).get_json()
    step = job["phases"][0]["steps"][0]
    assert step["output"].startswith("Task Master did: finish the quarterly report")
    assert step["provider"] == "taskmaster" and step["model"] == "taskmaster/v1"
    assert Decimal(step["cost"]) == Decimal("0.0042")
    with transaction(session_factory(database_url)) as s:
        rows = list(s.scalars(sa.select(UsageRecord).where(UsageRecord.job_id == run_id)))
    assert [r.cost for r in rows] == [Decimal("0.0042")]
    assert holds(database_url, run_id) == ["deferred"]  # settled, under the alert level
    assert len(server.paths("POST")) == 1  # one submit, however many polls
    assert len([p for p in server.paths("GET") if not p.endswith("/result")]) >= 3
    assert all(auth == f"Bearer {KEY}" for _, _, auth in server.requests)
    types = event_types(database_url, run_id)
    assert "external.submitted" in types and types.count("external.status") >= 2


def test_a_failed_remote_task_fails_the_step_and_releases_the_hold(
    live_client, tenant, database_url
):
    agent = external_agent(live_client, tenant)
    body = execute(live_client, tenant, agent, "fail on purpose")
    assert body["status"] == "failed"
    assert "external_failed" in body["error"] and "the generator crashed" in body["error"]
    assert holds(database_url, uuid.UUID(body["run_id"])) == ["released"]


def test_a_rejected_submit_fails_cleanly(live_client, tenant, database_url):
    agent = external_agent(live_client, tenant)
    body = execute(live_client, tenant, agent, "reject this one")
    assert body["status"] == "failed" and "external_server_error" in body["error"]
    assert holds(database_url, uuid.UUID(body["run_id"])) == ["released"]


def test_a_server_that_keeps_erroring_fails_the_step(live_client, tenant, database_url):
    agent = external_agent(live_client, tenant)
    body = execute(live_client, tenant, agent, "broken status")
    assert body["status"] == "failed"
    assert "3 polls in a row failed" in body["error"]
    assert holds(database_url, uuid.UUID(body["run_id"])) == ["released"]


def test_a_task_that_never_finishes_times_out_and_is_cancelled_there(
    live_client, tenant, server, database_url
):
    agent = external_agent(live_client, tenant, timeout_seconds=2)
    body = execute(live_client, tenant, agent, "never finish")
    assert body["status"] == "failed" and "external_timeout" in body["error"]
    assert holds(database_url, uuid.UUID(body["run_id"])) == ["released"]
    assert any(p.endswith("/cancel") for p in server.paths("POST"))


def test_cancel_reaches_the_task_server(live_client, tenant, server, database_url):
    agent = external_agent(live_client, tenant)
    response = live_client.post(
        f"/api/v1/agents/{agent}/execute",
        json={"input": "never finish, until cancelled", "wait_seconds": 0},
        headers=tenant["headers"],
    )
    run_id = uuid.UUID(response.get_json()["run_id"])
    deadline = time.monotonic() + 60
    while "external.submitted" not in event_types(database_url, run_id):
        assert time.monotonic() < deadline, "never submitted"
        time.sleep(0.1)
    cancelled = live_client.post(f"/api/v1/jobs/{run_id}/cancel", headers=tenant["headers"])
    assert cancelled.status_code == 200, cancelled.get_json()
    while not any(p.endswith("/cancel") for p in server.paths("POST")):
        assert time.monotonic() < deadline, "the server never heard of the cancel"
        time.sleep(0.1)
    (task,) = server.tasks.values()
    assert task["status"] == "cancelled"
    while "external.cancel" not in event_types(database_url, run_id):
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert holds(database_url, run_id) == ["released"]


def test_task_servers_are_not_model_providers(live_client, tenant, database_url):
    response = live_client.post(
        "/api/v1/agents", json={"name": "x", "provider": "taskmaster"}, headers=tenant["headers"]
    )
    assert response.status_code == 422
    response = live_client.post(
        "/api/v1/agents",
        json={"name": "x", "executor": "external", "task_server": "nope"},
        headers=tenant["headers"],
    )
    assert response.status_code == 422
    assert response.get_json()["error"]["details"][0]["field"] == "config.task_server"
    with transaction(session_factory(database_url)) as s:
        row = s.scalar(
            sa.select(Integration).where(Integration.organization_id == tenant["org_id"])
        )
        assert row.kind == "task_server" and row.encrypted_api_key != KEY
