"""Seed 002's agent payload: one stored shape with seeds 000/001, answered in seed 002's
fields; unknown tools are refused at creation."""

from __future__ import annotations

import pytest

from tests import factories
from tests.test_auth import assert_error

SEED_002_AGENT = {
    "name": "Sales Analyst",
    "description": "Analyzes sales data and generates insights",
    "instructions": "You are a sales analyst. Analyze data and provide actionable insights.",
    "provider": "openai",
    "model": "gpt-4",
    "temperature": 0.5,
    "tools": ["calculator", "search"],
    "metadata": {"department": "sales"},
}


@pytest.fixture
def headers(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin")
    db.commit()
    return factories.auth_headers(app, admin)


def test_seed_002_agent_is_created_and_answered_in_its_own_fields(client, headers):
    response = client.post("/api/v1/agents", json=SEED_002_AGENT, headers=headers)
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    for key in ("name", "description", "provider", "model", "temperature", "tools", "metadata"):
        assert body[key] == SEED_002_AGENT[key], key
    assert body["instructions"] == SEED_002_AGENT["instructions"]
    assert body["is_active"] is True and body["id"] and body["created_at"]
    # The one stored shape: what seeds 000/001 call the same settings.
    config = body["config"]
    assert config["providers"] == ["openai"]
    assert config["model_config"] == {"model": "gpt-4", "temperature": 0.5}
    assert config["system_prompt"] == SEED_002_AGENT["instructions"]
    assert config["tools"] == ["calculator", "search"]
    again = client.get(f"/api/v1/agents/{body['id']}", headers=headers).get_json()
    assert {k: again[k] for k in SEED_002_AGENT} == {k: body[k] for k in SEED_002_AGENT}


def test_seed_000_payload_reads_back_in_seed_002_fields(client, headers):
    body = client.post(
        "/api/v1/agents",
        json={
            "name": "My MCP Agent",
            "type": "mcp_orchestrator",
            "config": {
                "providers": ["sim", "openai"],
                "model_config": {"model": "sim/echo", "temperature": 0.1},
                "system_prompt": "Be brief.",
            },
        },
        headers=headers,
    ).get_json()
    assert body["provider"] == "sim" and body["model"] == "sim/echo"
    assert body["temperature"] == 0.1 and body["instructions"] == "Be brief."
    assert body["tools"] == [] and body["metadata"] == {} and body["description"] is None


def test_seed_002_update_keeps_the_model_when_only_temperature_changes(client, headers):
    created = client.post("/api/v1/agents", json=SEED_002_AGENT, headers=headers).get_json()
    response = client.put(
        f"/api/v1/agents/{created['id']}",
        json={"temperature": 0.9, "tools": ["calculator"], "metadata": {"team": "b"}},
        headers=headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["model"] == "gpt-4" and body["temperature"] == 0.9
    assert body["tools"] == ["calculator"] and body["metadata"] == {"team": "b"}


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"tools": ["calculator", "shell"]}, "tools"),
        ({"tools": "calculator"}, "tools"),
        ({"config": {"tools": ["rm -rf"]}}, "config.tools"),
        ({"provider": "perplexity"}, "config.providers"),
        ({"model": "gpt-99"}, "config.model_config.model"),
        ({"temperature": 3}, "temperature"),
        ({"provider": "sim", "providers": ["openai"]}, "provider"),
        ({"instructions": "a", "system_prompt": "b"}, "instructions"),
        ({"model": "gpt-4", "model_config": {"model": "gpt-4o"}}, "model"),
        ({"metadata": "x"}, "metadata"),
    ],
)
def test_seed_002_bad_input_is_a_422(client, headers, changes, field):
    body = {k: v for k, v in SEED_002_AGENT.items() if k not in changes and k != "provider"}
    body |= {"provider": "openai"} if "providers" not in changes else {}
    body |= changes
    response = client.post("/api/v1/agents", json=body, headers=headers)
    assert_error(response, 422, "VALIDATION_ERROR", field)
