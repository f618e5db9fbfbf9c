"""POST /agents/{id}/test and /execute: real provider round trips through real workers."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from models.db import session_factory, transaction
from tests import factories
from tests.helpers import live_tenant, wait_terminal

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def agent_with(database_url, org_id, preferences) -> uuid.UUID:
    from models import Organization

    with transaction(session_factory(database_url)) as s:
        org = s.get(Organization, org_id)
        return factories.agent(
            s,
            org,
            config={
                "providers": ["sim"],
                "model_preferences": preferences,
                "max_retries": 0,
                "timeout_seconds": 10,
            },
        ).id


def test_agent_test_is_a_real_round_trip(live_client, tenant):
    response = live_client.post(
        f"/api/v1/agents/{tenant['agent_id']}/test",
        json={"test_payload": "Hello, MCP Agent!"},
        headers=tenant["headers"],
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "completed"
    assert body["result"] == "Agent configuration valid"
    assert body["provider_used"] == "sim" and isinstance(body["execution_time_ms"], int)
    assert "Hello, MCP Agent!" in body["output"]


def test_agent_test_reports_a_broken_configuration(live_client, tenant, database_url):
    broken = agent_with(database_url, tenant["org_id"], {"general": "sim/error"})
    body = live_client.post(
        f"/api/v1/agents/{broken}/test", json={}, headers=tenant["headers"]
    ).get_json()
    assert body["status"] == "failed"
    assert "server_error" in body["result"]


def test_agent_execute_answers_output_tokens_and_cost(live_client, tenant):
    response = live_client.post(
        f"/api/v1/agents/{tenant['agent_id']}/execute",
        json={"input": "Analyze the sales performance for Product X", "metadata": {"product": "X"}},
        headers=tenant["headers"],
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "completed" and body["run_id"]
    assert "Product X" in body["output"]
    assert body["tokens_used"] > 0 and Decimal(body["cost"]) > 0
    job = live_client.get(body["location"], headers=tenant["headers"]).get_json()
    assert job["kind"] == "agent_run" and job["agent_id"] == str(tenant["agent_id"])


def test_agent_execute_that_outlasts_the_wait_answers_202(live_client, tenant, database_url):
    slow = agent_with(database_url, tenant["org_id"], {"general": "sim/slow"})
    response = live_client.post(
        f"/api/v1/agents/{slow}/execute",
        json={"input": "take your time", "wait_seconds": 0},
        headers=tenant["headers"],
    )
    assert response.status_code == 202
    assert response.headers["Location"] == response.get_json()["location"]
    assert (
        wait_terminal(live_client, response.headers["Location"], tenant["headers"])["status"]
        == "completed"
    )


def test_agent_runs_are_scoped_and_checked(live_client, tenant, database_url):
    other = live_tenant(live_client.application, database_url)
    viewer = live_tenant(live_client.application, database_url, role="viewer")
    h = tenant["headers"]
    assert (
        live_client.post(
            f"/api/v1/agents/{other['agent_id']}/execute", json={"input": "x"}, headers=h
        ).status_code
        == 404
    )
    assert (
        live_client.post(f"/api/v1/agents/{uuid.uuid4()}/test", json={}, headers=h).status_code
        == 404
    )
    assert (
        live_client.post(
            f"/api/v1/agents/{viewer['agent_id']}/test", json={}, headers=viewer["headers"]
        ).status_code
        == 403
    )
    bad = live_client.post(
        f"/api/v1/agents/{tenant['agent_id']}/execute", json={"input": ""}, headers=h
    )
    assert bad.status_code == 422 and bad.get_json()["error"]["details"][0]["field"] == "input"
    assert (
        live_client.post(
            f"/api/v1/agents/{tenant['agent_id']}/execute",
            json={"input": "x", "wait_seconds": 99},
            headers=h,
        ).status_code
        == 422
    )
