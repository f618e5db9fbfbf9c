"""Agents with tools through real workers and the offline ``sim`` provider: seed 002's
flow with calculator and search, the loop's bounds, the budget mid-loop, and search's
tenant isolation."""

from __future__ import annotations

import json
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import JobEvent, Organization, UsageRecord
from models.db import session_factory, transaction
from tests import factories
from tests.helpers import live_tenant

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def tool_agent(database_url, org_id, tools, model="sim/echo", **config) -> uuid.UUID:
    with transaction(session_factory(database_url)) as s:
        org = s.get(Organization, org_id)
        return factories.agent(
            s,
            org,
            config={
                "providers": ["sim"],
                "model_config": {"model": model, **config.pop("model_config", {})},
                "tools": tools,
                "max_retries": 0,
                "timeout_seconds": 10,
                **config,
            },
        ).id


def execute(client, tenant, agent_id, text, wait=45):
    response = client.post(
        f"/api/v1/agents/{agent_id}/execute",
        json={"input": text, "wait_seconds": wait},
        headers=tenant["headers"],
    )
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def events(database_url, job_id, *types):
    with transaction(session_factory(database_url)) as s:
        rows = s.scalars(
            sa.select(JobEvent).where(JobEvent.job_id == job_id).order_by(JobEvent.seq)
        )
        return [(e.type, e.data) for e in rows if not types or e.type in types]


def ledger(database_url, job_id) -> list[UsageRecord]:
    with transaction(session_factory(database_url)) as s:
        return list(s.scalars(sa.select(UsageRecord).where(UsageRecord.job_id == job_id)))


def test_seed_002_agent_with_calculator_end_to_end(live_client, tenant, database_url):
    created = live_client.post(
        "/api/v1/agents",
        json={
            "name": "Sales Analyst",
            "description": "Analyzes sales data and generates insights",
            "instructions": "You are a sales analyst. Use exact numbers.",
            "provider": "sim",
            "model": "sim/echo",
            "temperature": 0.5,
            "tools": ["calculator", "search"],
            "metadata": {"department": "sales"},
        },
        headers=tenant["headers"],
    )
    assert created.status_code == 201, created.get_json()
    agent_id = created.get_json()["id"]
    body = execute(live_client, tenant, agent_id, "What is Q4 revenue, 2500000 * 1.18, in USD?")
    assert body["status"] == "completed", body
    assert body["tools_used"] == ["calculator"]
    assert "calculator returned 2950000.0" in body["output"]
    run_id = uuid.UUID(body["run_id"])
    rows = ledger(database_url, run_id)
    assert len(rows) == 2  # two model turns: the tool call, then the answer
    assert Decimal(body["cost"]) == sum(r.cost for r in rows) > 0
    assert body["tokens_used"] == sum(r.prompt_tokens + r.completion_tokens for r in rows)
    history = events(database_url, run_id, "tool.call", "tool.result", "step.completed")
    call, result, done = history
    assert call[0] == "tool.call" and call[1]["tool"] == "calculator"
    assert json.loads(call[1]["arguments"]) == {"expression": "2500000 * 1.18"}
    assert result[0] == "tool.result" and result[1]["ok"] and result[1]["result"] == "2950000.0"
    assert done[1]["tools_used"] == ["calculator"]
    job = live_client.get(body["location"], headers=tenant["headers"]).get_json()
    assert job["result"]["tools_used"] == ["calculator"]
    assert Decimal(job["result"]["cost"]) == Decimal(body["cost"])


def test_search_finds_only_the_organizations_own_outputs(live_client, tenant, database_url):
    word = f"zebracorn{uuid.uuid4().hex[:6]}"
    plain = tool_agent(database_url, tenant["org_id"], [])
    seeded = execute(live_client, tenant, plain, f"Our {word} campaign sold 1200 units")
    assert seeded["status"] == "completed" and word in seeded["output"]

    searcher = tool_agent(database_url, tenant["org_id"], ["search"])
    body = execute(live_client, tenant, searcher, f"search: {word} campaign")
    assert body["status"] == "completed", body
    assert body["tools_used"] == ["search"]
    (_, result), *_ = events(database_url, uuid.UUID(body["run_id"]), "tool.result")
    found = json.loads(result["result"])["results"]
    assert [r["job_id"] for r in found] == [seeded["run_id"]]
    assert word in found[0]["snippet"] and found[0]["rank"] > 0

    other = live_tenant(live_client.application, database_url)
    outsider = tool_agent(database_url, other["org_id"], ["search"])
    body = execute(live_client, other, outsider, f"search: {word} campaign")
    assert body["status"] == "completed"
    (_, result), *_ = events(database_url, uuid.UUID(body["run_id"]), "tool.result")
    assert json.loads(result["result"])["results"] == []


def test_a_failing_tool_is_told_to_the_model_and_the_loop_goes_on(
    live_client, tenant, database_url
):
    agent = tool_agent(database_url, tenant["org_id"], ["calculator"])
    body = execute(live_client, tenant, agent, "Please compute 10 / 0 for the report")
    assert body["status"] == "completed", body
    assert "calculator returned error: division by zero" in body["output"]
    (_, result), *_ = events(database_url, uuid.UUID(body["run_id"]), "tool.result")
    assert result["ok"] is False


def test_a_model_that_calls_tools_forever_is_stopped_and_every_turn_charged(
    live_client, tenant, database_url
):
    agent = tool_agent(database_url, tenant["org_id"], ["calculator"], model="sim/tool-loop")
    body = execute(live_client, tenant, agent, "Keep going")
    assert body["status"] == "failed", body
    assert "tool_loop_limit" in body["error"] and "6 turns" in body["error"]
    rows = ledger(database_url, uuid.UUID(body["run_id"]))
    assert len(rows) == 6  # BATON_TOOL_MAX_TURNS
    assert Decimal(body["cost"]) == sum(r.cost for r in rows) > 0
    run_events = events(database_url, uuid.UUID(body["run_id"]), "tool.call", "tool.result")
    results = [d for t, d in run_events if t == "tool.result"]
    assert len(results) == 6 and results[-1]["ok"] is False  # the last turn's call: not run
    assert all(r["ok"] for r in results[:-1])


def test_budget_exhausted_mid_loop_stops_before_the_next_turn(live_client, tenant, database_url):
    limit = Decimal("0.0002")  # a turn costs about 0.00007 and holds about 0.00009
    response = live_client.post(
        "/api/v1/budget/limits",
        json={
            "name": "tight", "scope_type": "organization", "period": "daily",
            "amount_usd": str(limit), "action_on_exceed": "block",
        },
        headers=tenant["headers"],
    )  # fmt: skip
    assert response.status_code == 201, response.get_json()
    agent = tool_agent(
        database_url, tenant["org_id"], ["calculator"], model="sim/tool-loop",
        model_config={"max_tokens": 50},
    )  # fmt: skip
    body = execute(live_client, tenant, agent, "Keep going")
    assert body["status"] == "failed", body
    assert "BUDGET_EXCEEDED" in body["error"]
    rows = ledger(database_url, uuid.UUID(body["run_id"]))
    assert 1 <= len(rows) < 6  # some turns ran, then the budget stopped the loop
    assert sum(r.cost for r in rows) <= limit
    assert Decimal(body["cost"]) == sum(r.cost for r in rows)
    attempts = events(database_url, uuid.UUID(body["run_id"]), "provider.attempt")
    assert len(attempts) == len(rows)  # no turn was sent that the ledger does not show
