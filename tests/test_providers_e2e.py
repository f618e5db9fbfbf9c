"""Providers end to end: HTTP -> real Celery workers -> a real local OpenAI-compatible
server over TCP (or sim) -> PostgreSQL history and ledger, Redis breaker and live channel."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
import sqlalchemy as sa

from models import BudgetLimit, BudgetReservation, JobEvent, UsageRecord
from models.db import session_factory, transaction
from orchestration import redis_store
from orchestration.breaker import Decision, Permit, RedisBreaker, identity
from orchestration.model_catalog import ResolvedModel, cost_of
from tests.fake_openai import SERVER_ERROR, completion_body
from tests.helpers import live_tenant, wait_for, wait_terminal

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def new_key() -> str:
    return "sk-proj-" + uuid.uuid4().hex + uuid.uuid4().hex


def add_integration(client, headers, base_url: str, key: str | None, name: str = "primary"):
    body = {"name": name, "base_url": base_url, "models": ["gpt-4o-mini"], "timeout_seconds": 10}
    if key:
        body["api_key"] = key
    response = client.post("/api/v1/integrations", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def add_agent(client, headers, config: dict[str, Any]) -> str:
    response = client.post(
        "/api/v1/agents",
        json={"name": f"agent {uuid.uuid4().hex[:6]}", "config": config},
        headers=headers,
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()["id"]


def events(database_url, job_id) -> list[JobEvent]:
    with transaction(session_factory(database_url)) as s:
        return list(
            s.scalars(
                sa.select(JobEvent)
                .where(JobEvent.job_id == uuid.UUID(str(job_id)))
                .order_by(JobEvent.seq)
            )
        )


def ledger(database_url, job_id) -> list[UsageRecord]:
    with transaction(session_factory(database_url)) as s:
        return list(
            s.scalars(
                sa.select(UsageRecord)
                .where(UsageRecord.job_id == uuid.UUID(str(job_id)))
                .order_by(UsageRecord.created_at)
            )
        )


def of_type(rows: list[JobEvent], kind: str) -> list[dict[str, Any]]:
    return [e.data for e in rows if e.type == kind]


FALLBACK_AGENT = {
    "providers": ["primary", "sim"],
    "model_preferences": {"general": "primary/gpt-4o-mini"},
    "max_retries": 1,
    "timeout_seconds": 10,
}


def test_a_failing_provider_falls_back_to_the_next_and_the_history_says_so(
    live_client, tenant, database_url, fake_openai
):
    h = tenant["headers"]
    key = new_key()
    server = fake_openai([(500, {}, SERVER_ERROR)])
    add_integration(live_client, h, server.base_url, key)
    agent_id = add_agent(live_client, h, FALLBACK_AGENT)
    with transaction(session_factory(database_url)) as s:  # so each hold is recorded
        s.add(
            BudgetLimit(
                organization_id=tenant["org_id"], name="watch", scope_type="organization",
                amount_usd=Decimal("100"), period="daily", action_on_exceed="warn",
            )
        )  # fmt: skip

    response = live_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"input": "Summarise Q4 sales"}, headers=h
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["status"] == "completed"
    assert body["provider_used"] == "sim" and body["model"] == "sim/echo"
    assert body["providers_tried"] == ["primary", "sim"]
    assert "Summarise Q4 sales" in body["output"]

    assert len(server.requests) == 2  # 1 + max_retries, then the next provider
    assert {r["headers"]["authorization"] for r in server.requests} == {f"Bearer {key}"}

    history = events(database_url, body["run_id"])
    attempts = of_type(history, "provider.attempt")
    assert [(a["provider"], a["model"], a["status"], a["attempt"]) for a in attempts] == [
        ("primary", "primary/gpt-4o-mini", "error", 1),
        ("primary", "primary/gpt-4o-mini", "error", 2),
        ("sim", "sim/echo", "ok", 3),
    ]
    assert attempts[0]["http_status"] == 500 and attempts[0]["error_code"] == "server_error"
    (completed,) = of_type(history, "step.completed")
    assert completed["provider"] == "sim" and completed["providers_tried"] == ["primary", "sim"]
    types = [e.type for e in history]
    assert types.index("provider.attempt") < types.index("step.completed")

    job = live_client.get(f"/api/v1/jobs/{body['run_id']}", headers=h).get_json()
    step = job["phases"][0]["steps"][0]
    assert (step["provider"], step["model"]) == ("sim", "sim/echo")

    # The ledger names the provider/model that answered, at its real price; each attempt
    # held its own model's worst case, and only the answer was charged.
    (row,) = ledger(database_url, body["run_id"])
    assert (row.provider, row.model) == ("sim", "sim/echo")
    assert row.cost == cost_of(
        ResolvedModel("sim", "echo"), row.prompt_tokens, row.completion_tokens
    )
    with transaction(session_factory(database_url)) as s:
        holds = list(
            s.scalars(
                sa.select(BudgetReservation)
                .where(BudgetReservation.job_id == uuid.UUID(body["run_id"]))
                .order_by(BudgetReservation.call_key)
            )
        )
    assert [(h.call_key.rsplit(":", 1)[1], h.status) for h in holds] == [
        ("1", "released"),
        ("2", "released"),
        ("3", "deferred"),  # settled under the alert level: deferred
    ]
    assert holds[0].amount != holds[2].amount  # gpt-4o-mini's price, then sim's


def test_a_breaker_opened_in_another_process_sends_the_step_to_the_next_provider(
    live_client, tenant, database_url, fake_openai
):
    h = tenant["headers"]
    server = fake_openai([(200, {}, completion_body)])
    add_integration(live_client, h, server.base_url, new_key())
    agent_id = add_agent(live_client, h, FALLBACK_AGENT)
    # Open the organization's breaker for 'primary' from this (test) process.
    name = identity(f"org:{tenant['org_id']}", "primary")
    breaker = RedisBreaker()
    for _ in range(breaker.thresholds.failures):
        breaker.record(Permit(name, Decision.ALLOW), failed=True, error_code="server_error")

    body = live_client.post(
        f"/api/v1/agents/{agent_id}/test", json={"test_payload": "ping"}, headers=h
    ).get_json()
    assert body["status"] == "completed" and body["provider_used"] == "sim"
    assert body["providers_tried"] == ["primary", "sim"]
    assert server.requests == []  # the worker saw the open breaker: no call was made
    history = events(database_url, body["test_id"])
    (skipped,) = of_type(history, "provider.skipped")
    assert skipped["provider"] == "primary" and skipped["error_code"] == "circuit_open"
    assert [a["provider"] for a in of_type(history, "provider.attempt")] == ["sim"]

    # Another organization's 'primary' is a different server: its breaker is its own.
    other = live_tenant(live_client.application, database_url)
    add_integration(live_client, other["headers"], server.base_url, new_key())
    other_agent = add_agent(live_client, other["headers"], FALLBACK_AGENT)
    answer = live_client.post(
        f"/api/v1/agents/{other_agent}/execute", json={"input": "hi"}, headers=other["headers"]
    ).get_json()
    assert answer["provider_used"] == "primary" and len(server.requests) == 1


def test_every_attempt_is_in_the_history_before_the_step_ends(
    live_client, tenant, database_url, fake_openai
):
    h = tenant["headers"]
    server = fake_openai([(500, {}, SERVER_ERROR), (200, {}, completion_body, 3.0)])
    add_integration(live_client, h, server.base_url, None)
    agent_id = add_agent(
        live_client, h, {**FALLBACK_AGENT, "providers": ["primary"], "timeout_seconds": 30}
    )
    accepted = live_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"input": "slow", "wait_seconds": 0}, headers=h
    ).get_json()
    running = wait_for(
        live_client,
        accepted["location"],
        h,
        lambda b: any(e["type"] == "provider.attempt" for e in b["history"]),
    )
    assert running["status"] == "running"  # attempt 2 is still in flight
    (first,) = [e["data"] for e in running["history"] if e["type"] == "provider.attempt"]
    assert first["status"] == "error" and first["http_status"] == 500
    done = wait_terminal(live_client, accepted["location"], h)
    assert done["status"] == "completed"
    assert done["result"]["provider_used"] == "primary"


def test_a_streamed_job_publishes_its_output_in_order_and_costs_what_unstreamed_does(
    live_client, tenant, database_url
):
    h = tenant["headers"]
    client = redis_store.redis_client()
    pubsub = client.pubsub()
    pubsub.psubscribe(redis_store.key("jobs", "*", "live"))
    received: list[dict[str, Any]] = []
    stop = threading.Event()

    def listen() -> None:
        while not stop.is_set():
            message = pubsub.get_message(timeout=0.1)
            if message and message["type"] == "pmessage":
                received.append(json.loads(message["data"]))

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    description = f"Stream the release notes {uuid.uuid4().hex}"
    try:
        streamed = live_client.post(
            "/api/v1/tasks",
            json={"description": description, "settings": {"stream": True}},
            headers=h,
        ).get_json()
        plain = live_client.post(
            "/api/v1/tasks", json={"description": description}, headers=h
        ).get_json()
        streamed_job = wait_terminal(live_client, streamed["location"], h)
        plain_job = wait_terminal(live_client, plain["location"], h)
        time.sleep(0.3)
    finally:
        stop.set()
        listener.join(timeout=2)
        pubsub.close()
    assert streamed_job["status"] == plain_job["status"] == "completed"
    output = streamed_job["result"]["output"]
    assert output == plain_job["result"]["output"]

    # History: step.progress events in order, their deltas are the output, before the end.
    history = events(database_url, streamed["id"])
    progress = of_type(history, "step.progress")
    assert len(progress) >= 3
    assert "".join(p["delta"] for p in progress) == output
    offsets = [p["offset"] for p in progress]
    assert offsets == sorted(offsets) and offsets[0] == 0
    assert all(p["attempt"] == 1 and p["provider"] == "sim" for p in progress)
    types = [e.type for e in history]
    assert max(i for i, t in enumerate(types) if t == "step.progress") < types.index(
        "step.completed"
    )
    assert of_type(history, "provider.attempt")[0]["stream"] is True

    # Live channel: one message per chunk, in order, for this job only; beside them, each
    # committed event row (issue 10), by number.
    mine = [m for m in received if m["job_id"] == streamed["id"]]
    deltas = [m for m in mine if m["type"] == "step.delta"]
    assert [m["index"] for m in deltas] == list(range(len(deltas)))
    assert "".join(m["delta"] for m in deltas) == output
    assert {m["type"] for m in mine} == {"step.delta", "event"}
    rows = [m["seq"] for m in mine if m["type"] == "event"]
    assert set(rows) <= {e.seq for e in history} and len(rows) == len(set(rows))
    assert not [m for m in received if m["job_id"] == plain["id"] and m["type"] == "step.delta"]

    # Usage and price: exactly as the same call unstreamed.
    assert streamed_job["token_usage"] == plain_job["token_usage"]
    assert Decimal(streamed_job["cost"]) == Decimal(plain_job["cost"]) > 0
    (a,), (b,) = ledger(database_url, streamed["id"]), ledger(database_url, plain["id"])
    assert (a.prompt_tokens, a.completion_tokens, a.cost) == (
        b.prompt_tokens,
        b.completion_tokens,
        b.cost,
    )


def test_a_cut_stream_is_charged_for_what_it_generated(live_client, tenant, database_url):
    h = tenant["headers"]
    agent_id = add_agent(
        live_client, h, {"providers": ["sim"], "max_retries": 1, "timeout_seconds": 10}
    )
    accepted = live_client.post(
        "/api/v1/tasks",
        json={
            "description": "A stream that breaks",
            "agent_id": agent_id,
            "settings": {"stream": True, "sim_fault": "cut-stream"},
        },
        headers=h,
    ).get_json()
    job = wait_terminal(live_client, accepted["location"], h)
    assert job["status"] == "failed" and "stream_cut" in job["error"]
    rows = ledger(database_url, accepted["id"])
    assert len(rows) == 2  # both attempts were cut, both cost something
    assert all(r.cost > 0 and r.completion_tokens > 0 and r.model == "sim/echo" for r in rows)
    step = job["phases"][0]["steps"][0]
    assert Decimal(step["cost"]) == sum(r.cost for r in rows) == Decimal(job["cost"])
    history = events(database_url, accepted["id"])
    attempts = of_type(history, "provider.attempt")
    assert [a["error_code"] for a in attempts] == ["stream_cut", "stream_cut"]
    assert [Decimal(a["charged"]["cost"]) for a in attempts] == [r.cost for r in rows]
    # What streamed before each cut is in the history too, per attempt.
    assert {p["attempt"] for p in of_type(history, "step.progress")} <= {1, 2}


def test_a_missing_key_is_a_clear_error_in_the_job(live_client, tenant, database_url):
    h = tenant["headers"]
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "needs openai", "settings": {"ai_model": "gpt-4o"}},
        headers=h,
    )
    assert accepted.status_code == 202  # a known, priced model: the key is the worker's business
    job = wait_terminal(live_client, accepted.get_json()["location"], h)
    assert job["status"] == "failed"
    assert "missing_api_key" in job["error"] and "OPENAI_API_KEY" in job["error"]
    (skipped,) = of_type(events(database_url, job["id"]), "provider.skipped")
    assert skipped["provider"] == "openai" and skipped["error_code"] == "missing_api_key"
    assert ledger(database_url, job["id"]) == []


def test_a_key_never_appears_in_events_logs_or_responses(
    live_client, tenant, database_url, fake_openai, workers
):
    h = tenant["headers"]
    key = new_key()
    echo = {
        "error": {"message": f"upstream refused key {key} (Bearer {key})", "type": "server_error"}
    }
    server = fake_openai([(500, {}, echo), (200, {}, completion_body)])
    integration = add_integration(live_client, h, server.base_url, key)
    agent_id = add_agent(live_client, h, {**FALLBACK_AGENT, "providers": ["primary"]})
    ok = live_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"input": "retry me"}, headers=h
    ).get_json()
    assert ok["status"] == "completed" and ok["provider_used"] == "primary"

    server.script[:] = [(401, {}, {"error": {"message": f"Incorrect API key provided: {key}"}})]
    failed = live_client.post(
        f"/api/v1/agents/{agent_id}/execute", json={"input": "refuse me"}, headers=h
    ).get_json()
    assert failed["status"] == "failed" and "auth_error" in failed["error"]
    assert "[redacted]" in failed["error"]
    assert all(r["headers"]["authorization"] == f"Bearer {key}" for r in server.requests)

    exposed = [json.dumps(ok), json.dumps(failed)]
    for run in (ok, failed):
        exposed.append(json.dumps([e.data for e in events(database_url, run["run_id"])]))
        exposed.append(
            live_client.get(f"/api/v1/jobs/{run['run_id']}", headers=h).get_data(as_text=True)
        )
    exposed.append(live_client.get("/api/v1/integrations", headers=h).get_data(as_text=True))
    exposed.append(
        live_client.get(f"/api/v1/integrations/{integration['id']}", headers=h).get_data(
            as_text=True
        )
    )
    exposed.append(live_client.get("/api/v1/health").get_data(as_text=True))
    exposed.append(live_client.get("/api/v1/health/status").get_data(as_text=True))
    exposed.append(workers.log_text())
    everything = "\n".join(exposed)
    assert "primary/gpt-4o-mini" in everything  # the haystack is the real one
    for needle in (key, key[8:40], key[-16:]):
        assert needle not in everything


def test_health_reports_workers_and_each_provider(live_client, monkeypatch):
    from baton.settings import reset_settings_cache

    edge_key = new_key()
    monkeypatch.setenv(
        "BATON_PROVIDERS",
        json.dumps(
            {
                "edge": {
                    "base_url": "http://127.0.0.1:9/v1",
                    "models": ["m"],
                    "api_key_env": "EDGE_KEY",
                },
                "nokey": {
                    "base_url": "http://127.0.0.1:9/v1",
                    "models": ["m"],
                    "api_key_env": "NOKEY_KEY",
                },
            }
        ),
    )
    monkeypatch.setenv("EDGE_KEY", edge_key)
    monkeypatch.setenv("BATON_BREAKER_COOLDOWN_SECONDS", "0.5")
    reset_settings_cache()
    try:
        body = live_client.get("/api/v1/health").get_json()
        assert body["workers"]["status"] == "available" and body["workers"]["count"] >= 2
        providers = body["providers"]
        assert providers["sim"]["status"] == "available"
        assert providers["openai"]["status"] == "not_configured"
        assert "OPENAI_API_KEY" in providers["openai"]["detail"]
        assert providers["nokey"]["status"] == "not_configured"
        assert providers["edge"] == {"status": "available", "breaker": "closed", "detail": None}

        breaker = RedisBreaker()
        for _ in range(breaker.thresholds.failures):
            breaker.record(
                Permit(identity("global", "edge"), Decision.ALLOW),
                failed=True,
                error_code="timeout",
            )
        edge = live_client.get("/api/v1/health").get_json()["providers"]["edge"]
        assert edge["status"] == "unavailable" and edge["breaker"] == "open"
        assert "timeout" in edge["detail"]
        time.sleep(0.6)  # the cool-down is over: the next call would be the probe
        edge = live_client.get("/api/v1/health").get_json()["providers"]["edge"]
        assert edge["status"] == "degraded" and edge["breaker"] == "half_open"
        status = live_client.get("/api/v1/health/status").get_json()
        assert status["providers"]["edge"]["status"] == "degraded"
        assert status["workers"]["count"] >= 2
        assert edge_key not in json.dumps(status) + json.dumps(edge)
    finally:
        monkeypatch.undo()
        reset_settings_cache()
