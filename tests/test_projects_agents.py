"""Projects and agents: CRUD, roles, tenant isolation, filters, and input checks."""

from __future__ import annotations

import uuid

import pytest

from tests import factories
from tests.test_auth import assert_error


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin", full_name="Ada Admin", username=None)
    member = factories.user(db, org, role="member")
    viewer = factories.user(db, org, role="viewer")
    other_org = factories.organization(db)
    outsider = factories.user(db, other_org, role="admin")
    foreign_project = factories.project(db, other_org, name="Foreign secret")
    foreign_agent = factories.agent(db, other_org, name="Foreign agent")
    db.commit()
    return {
        "org": org,
        "admin": admin,
        "headers": factories.auth_headers(app, admin),
        "member_headers": factories.auth_headers(app, member),
        "viewer_headers": factories.auth_headers(app, viewer),
        "outsider_headers": factories.auth_headers(app, outsider),
        "foreign_project": foreign_project,
        "foreign_agent": foreign_agent,
    }


def create_project(client, headers, **fields):
    body = {"name": "E-commerce Platform", **fields}
    response = client.post("/api/v1/projects", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def create_agent(client, headers, **fields):
    body = {"name": "My MCP Agent", **fields}
    response = client.post("/api/v1/agents", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


# -- projects -----------------------------------------------------------------------------


def test_project_crud(client, tenant):
    headers = tenant["headers"]
    created = create_project(
        client,
        headers,
        description="Modern e-commerce solution",
        topic="Build a scalable e-commerce platform",
        priority="high",
        metadata={"complexity": "high", "technologies": ["React"]},
    )
    assert created["status"] == "active"
    assert created["priority"] == "high"
    assert created["metadata"] == {"complexity": "high", "technologies": ["React"]}
    assert created["created_by"]["id"] == str(tenant["admin"].id)
    assert created["created_by"]["full_name"] == "Ada Admin"
    assert created["organization_id"] == str(tenant["org"].id)
    uuid.UUID(created["id"])
    assert created["created_at"].endswith("+00:00") or created["created_at"].endswith("Z")

    url = f"/api/v1/projects/{created['id']}"
    fetched = client.get(url, headers=tenant["viewer_headers"]).get_json()
    assert fetched["name"] == "E-commerce Platform"
    assert fetched["orchestration_runs"] == []

    updated = client.put(url, json={"status": "completed", "name": "Renamed"}, headers=headers)
    assert updated.status_code == 200
    assert updated.get_json()["status"] == "completed"
    assert updated.get_json()["name"] == "Renamed"
    assert updated.get_json()["priority"] == "high"  # untouched fields stay

    patched = client.patch(url, json={"priority": "urgent"}, headers=tenant["member_headers"])
    assert patched.get_json()["priority"] == "urgent"

    deleted = client.delete(url, headers=headers)
    assert deleted.status_code == 200
    assert deleted.get_json() == {"message": "Project deleted successfully"}
    assert_error(client.get(url, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(url, headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_viewer_cannot_write_projects(client, tenant):
    response = client.post("/api/v1/projects", json={"name": "x"}, headers=tenant["viewer_headers"])
    assert_error(response, 403, "FORBIDDEN")
    project = create_project(client, tenant["headers"])
    url = f"/api/v1/projects/{project['id']}"
    assert_error(
        client.put(url, json={"name": "y"}, headers=tenant["viewer_headers"]), 403, "FORBIDDEN"
    )
    assert_error(client.delete(url, headers=tenant["viewer_headers"]), 403, "FORBIDDEN")
    assert client.get(url, headers=tenant["viewer_headers"]).status_code == 200


def test_projects_need_a_token(client):
    assert_error(client.get("/api/v1/projects"), 401, "AUTHENTICATION_REQUIRED")
    assert_error(
        client.post("/api/v1/projects", json={"name": "x"}), 401, "AUTHENTICATION_REQUIRED"
    )


def test_other_tenants_project_is_404_and_not_listed(client, tenant):
    foreign = tenant["foreign_project"]
    url = f"/api/v1/projects/{foreign.id}"
    headers = tenant["headers"]
    assert_error(client.get(url, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.put(url, json={"name": "mine"}, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(url, headers=headers), 404, "RESOURCE_NOT_FOUND")
    listed = client.get("/api/v1/projects?search=Foreign", headers=headers).get_json()
    assert listed["total"] == 0 and listed["items"] == []
    # The owner still sees it, untouched.
    own = client.get(url, headers=tenant["outsider_headers"]).get_json()
    assert own["name"] == "Foreign secret"


def test_project_list_filters_sort_and_pagination(client, tenant):
    headers = tenant["headers"]
    create_project(client, headers, name="Alpha", priority="low", description="first one")
    create_project(client, headers, name="Beta", priority="urgent", status="archived")
    create_project(client, headers, name="Gamma", priority="medium", description="100% done_x")
    create_project(client, headers, name="Delta", priority="high", status="failed")

    body = client.get("/api/v1/projects", headers=headers).get_json()
    assert {"items", "total", "limit", "offset", "has_next", "next_cursor"} <= set(body)
    assert body["total"] == 4 and body["limit"] == 20 and body["offset"] == 0
    assert [p["name"] for p in body["items"]] == ["Delta", "Gamma", "Beta", "Alpha"]  # newest first

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/projects?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return [p["name"] for p in response.get_json()["items"]]

    assert names("status=archived") == ["Beta"]
    assert sorted(names("status=archived,failed")) == ["Beta", "Delta"]
    assert names("priority=urgent") == ["Beta"]
    assert names("search=FIRST") == ["Alpha"]
    assert names("search=100%25") == ["Gamma"]  # % is literal, not a wildcard
    assert names("search=_") == ["Gamma"]
    assert names("sort=name") == ["Alpha", "Beta", "Delta", "Gamma"]
    assert names("sort=-priority") == ["Beta", "Delta", "Gamma", "Alpha"]  # by urgency
    assert names("sort=priority,-name") == ["Alpha", "Gamma", "Delta", "Beta"]
    assert names("sort=name&limit=2&offset=2") == ["Delta", "Gamma"]
    assert names("sort=name&limit=3&page=2") == ["Gamma"]


@pytest.mark.parametrize(
    "query",
    ["status=done", "priority=asap", "sort=secret", "limit=0", "limit=101", "offset=-1", "page=0"],
)
def test_project_list_bad_query(client, tenant, query):
    response = client.get(f"/api/v1/projects?{query}", headers=tenant["headers"])
    field = query.split("=")[0]
    assert_error(response, 422, "VALIDATION_ERROR", field)


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": ""}, "name"),
        ({"name": "x" * 201}, "name"),
        ({"name": "p", "status": "done"}, "status"),
        ({"name": "p", "priority": "asap"}, "priority"),
        ({"name": "p", "metadata": ["not", "a", "dict"]}, "metadata"),
        ({"name": 12}, "name"),
        ({"name": "p", "owner": "me"}, "owner"),
    ],
)
def test_project_bad_input(client, tenant, body, field):
    response = client.post("/api/v1/projects", json=body, headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)


def test_project_bad_path_and_body_shapes(client, tenant):
    headers = tenant["headers"]
    assert_error(
        client.get("/api/v1/projects/not-a-uuid", headers=headers), 404, "RESOURCE_NOT_FOUND"
    )
    assert_error(
        client.get(f"/api/v1/projects/{uuid.uuid4()}", headers=headers), 404, "RESOURCE_NOT_FOUND"
    )
    broken = client.post(
        "/api/v1/projects", data="{oops", content_type="application/json", headers=headers
    )
    assert broken.status_code in (400, 422)
    assert broken.get_json()["error"]["code"] == "VALIDATION_ERROR"
    big = client.post(
        "/api/v1/projects",
        data='{"name": "' + "x" * (1024 * 1024 + 1) + '"}',
        content_type="application/json",
        headers=headers,
    )
    assert big.status_code == 413
    assert big.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


# -- agents -------------------------------------------------------------------------------


def test_agent_crud_seed_000_shape(client, tenant):
    headers = tenant["headers"]
    created = create_agent(
        client,
        headers,
        type="mcp_orchestrator",
        config={
            "providers": ["openai", "groq"],
            "model_preferences": {
                "complex_reasoning": "gpt-4o",
                "code_generation": "llama-3.1-70b",
                "testing": "sim/echo",
            },
            "max_retries": 3,
            "timeout_seconds": 120,
        },
    )
    assert created["status"] == "active" and created["is_active"] is True
    assert created["type"] == "mcp_orchestrator"
    assert created["config"]["providers"] == ["openai", "groq"]
    assert created["config"]["model_preferences"]["code_generation"] == "llama-3.1-70b"

    url = f"/api/v1/agents/{created['id']}"
    assert client.get(url, headers=tenant["viewer_headers"]).get_json()["id"] == created["id"]

    updated = client.put(
        url,
        json={"name": "Updated MCP Agent", "config": {"providers": ["groq"], "max_retries": 5}},
        headers=headers,
    ).get_json()
    assert updated["name"] == "Updated MCP Agent"
    assert updated["config"]["max_retries"] == 5
    assert updated["config"]["providers"] == ["groq"]
    # Config keys not given are kept.
    assert updated["config"]["model_preferences"]["testing"] == "sim/echo"
    assert updated["config"]["timeout_seconds"] == 120

    paused = client.patch(url, json={"status": "paused"}, headers=tenant["member_headers"])
    assert paused.get_json()["status"] == "paused" and paused.get_json()["is_active"] is False

    deleted = client.delete(url, headers=headers)
    assert deleted.status_code == 204 and deleted.data == b""
    assert_error(client.get(url, headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_agent_seed_001_top_level_config_is_folded(client, tenant):
    project = create_project(client, tenant["headers"])
    created = create_agent(
        client,
        tenant["headers"],
        type="architect",
        project_id=project["id"],
        model_config={"model": "sim/echo", "temperature": 0.2, "max_tokens": 4096},
        system_prompt="You are a senior architect.",
    )
    config = created["config"]
    assert config["model_config"] == {"model": "sim/echo", "temperature": 0.2, "max_tokens": 4096}
    assert config["system_prompt"] == "You are a senior architect."
    assert config["max_retries"] == 3 and config["timeout_seconds"] == 120  # defaults
    assert created["project_id"] == project["id"]
    assert "model_config" not in {k for k in created if k != "config"}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "name"),
        ({"name": "a", "status": "sleeping"}, "status"),
        ({"name": "a", "project_id": "not-a-uuid"}, "project_id"),
        ({"name": "a", "config": {"providers": ["perplexity"]}}, "config.providers"),
        ({"name": "a", "config": {"providers": ["openai", "openai"]}}, "config.providers"),
        ({"name": "a", "config": {"providers": []}}, "config.providers"),
        ({"name": "a", "config": {"providers": "openai"}}, "config.providers"),
        (
            {"name": "a", "config": {"model_preferences": {"research": "perplexity-sonar"}}},
            "config.model_preferences.research",
        ),
        (
            {"name": "a", "config": {"model_preferences": {"x": "sim/nope"}}},
            "config.model_preferences.x",
        ),
        ({"name": "a", "config": {"max_retries": 11}}, "config.max_retries"),
        ({"name": "a", "config": {"max_retries": -1}}, "config.max_retries"),
        ({"name": "a", "config": {"timeout_seconds": 0}}, "config.timeout_seconds"),
        ({"name": "a", "config": {"timeout_seconds": 601}}, "config.timeout_seconds"),
        ({"name": "a", "config": {"model_config": {"temperature": 2.5}}}, "config.model_config"),
        ({"name": "a", "config": {"model_config": {"max_tokens": 0}}}, "config.model_config"),
        ({"name": "a", "model_config": {"model": "anthropic/claude"}}, "config.model_config.model"),
        ({"name": "a", "max_retries": 99}, "max_retries"),
        ({"name": "a", "max_retries": 1, "config": {"max_retries": 2}}, "max_retries"),
        ({"name": "a", "config": {"mystery": 1}}, "config.mystery"),
    ],
)
def test_agent_bad_input(client, tenant, body, field):
    response = client.post("/api/v1/agents", json=body, headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)


def test_agent_update_validates_config(client, tenant):
    agent = create_agent(client, tenant["headers"])
    url = f"/api/v1/agents/{agent['id']}"
    response = client.put(url, json={"config": {"providers": ["nope"]}}, headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", "config.providers")
    assert client.get(url, headers=tenant["headers"]).get_json()["config"] == agent["config"]


def test_agent_with_another_tenants_project_is_404(client, tenant):
    foreign = str(tenant["foreign_project"].id)
    response = client.post(
        "/api/v1/agents", json={"name": "a", "project_id": foreign}, headers=tenant["headers"]
    )
    assert_error(response, 404, "RESOURCE_NOT_FOUND", "project_id")
    agent = create_agent(client, tenant["headers"])
    moved = client.put(
        f"/api/v1/agents/{agent['id']}", json={"project_id": foreign}, headers=tenant["headers"]
    )
    assert_error(moved, 404, "RESOURCE_NOT_FOUND", "project_id")


def test_other_tenants_agent_is_404_and_not_listed(client, tenant):
    url = f"/api/v1/agents/{tenant['foreign_agent'].id}"
    headers = tenant["headers"]
    assert_error(client.get(url, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.put(url, json={"name": "x"}, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.delete(url, headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert client.get("/api/v1/agents", headers=headers).get_json()["total"] == 0
    assert client.get(url, headers=tenant["outsider_headers"]).status_code == 200


def test_viewer_cannot_write_agents(client, tenant):
    viewer = tenant["viewer_headers"]
    assert_error(
        client.post("/api/v1/agents", json={"name": "a"}, headers=viewer), 403, "FORBIDDEN"
    )
    agent = create_agent(client, tenant["headers"])
    url = f"/api/v1/agents/{agent['id']}"
    assert_error(client.put(url, json={"name": "b"}, headers=viewer), 403, "FORBIDDEN")
    assert_error(client.delete(url, headers=viewer), 403, "FORBIDDEN")
    assert client.get("/api/v1/agents", headers=viewer).get_json()["total"] == 1


def test_agent_list_filters(client, tenant):
    headers = tenant["headers"]
    project = create_project(client, headers)
    create_agent(client, headers, name="Coder", type="coder", project_id=project["id"])
    create_agent(client, headers, name="Tester", type="tester", status="inactive")
    create_agent(client, headers, name="General")

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/agents?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return sorted(a["name"] for a in response.get_json()["items"])

    assert names("") == ["Coder", "General", "Tester"]
    assert names("status=inactive") == ["Tester"]
    assert names("status=active,inactive") == ["Coder", "General", "Tester"]
    assert names(f"project_id={project['id']}") == ["Coder"]
    assert names("type=general") == ["General"]
    assert names("limit=1&sort=name") == ["Coder"]
    assert_error(
        client.get("/api/v1/agents?project_id=nope", headers=headers),
        422,
        "VALIDATION_ERROR",
        "project_id",
    )
    assert_error(
        client.get("/api/v1/agents?status=asleep", headers=headers),
        422,
        "VALIDATION_ERROR",
        "status",
    )


def test_deleting_a_project_detaches_its_agents(client, tenant):
    headers = tenant["headers"]
    project = create_project(client, headers)
    agent = create_agent(client, headers, project_id=project["id"])
    client.delete(f"/api/v1/projects/{project['id']}", headers=headers)
    fetched = client.get(f"/api/v1/agents/{agent['id']}", headers=headers).get_json()
    assert fetched["project_id"] is None
