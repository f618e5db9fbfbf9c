"""Seed 003 (AI Orchestrator Platform) through its dialect: the document's examples, its
nested error shape and codes for every bad input, its roles, its pagination, and the same
runs as /api/v1 — run to completion with real workers."""

from __future__ import annotations

import uuid

import pytest

from api.compat.orchestrator import DIALECT
from models import Template
from models.db import session_factory, transaction
from tests import factories
from tests.compat.contract import compare, load_examples, run_examples
from tests.helpers import TERMINAL, wait_for

BASE = DIALECT.base
WEBHOOK_URLS = {
    "webhook_url": "http://127.0.0.1:9/webhook",
    "webhook_url_2": "http://127.0.0.1:9/new-webhook",
}
ERROR_KEYS = {"code", "message", "details", "request_id", "timestamp"}


def _acme(session, *, public_template: bool = True) -> dict:
    """The document's organization, project and template, and an admin (John Doe).

    A committed public template is seen by every organization (tests/test_templates.py
    counts them): the end-to-end run, whose rows stay, keeps it private."""
    org = factories.organization(
        session,
        name="Acme Corporation",
        subscription_tier="enterprise",
        api_quota_limit=10000,
        settings={"default_ai_model": "gpt-4", "integration_enabled": True},
    )
    admin = factories.user(session, org, role="admin", full_name="John Doe")
    creator = factories.user(session, org, role="member", full_name="Template Creator")
    project = factories.project(
        session, org, name="E-commerce Platform",
        description="Modern e-commerce solution with AI features",
        topic="Build a scalable e-commerce platform with AI recommendations",
        status="active", priority="high", created_by_id=admin.id,
        metadata_={"estimated_duration": "3 months", "complexity": "high",
                   "technologies": ["React", "Node.js", "PostgreSQL"]},
    )  # fmt: skip
    session.add(
        Template(
            organization_id=org.id, created_by_id=creator.id, name="Web Application Starter",
            description="Template for creating modern web applications",
            category="web-development", is_public=public_template, usage_count=150,
            template_data={"phases": ["ideation", "design", "development"],
                           "integrations": ["git", "deployment"], "settings": {}},
        )
    )  # fmt: skip
    session.flush()
    return {"org": org, "admin": admin, "project_id": project.id, "email": admin.email}


@pytest.fixture
def acme(app, db):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"  # these tests sign in often
    tenant = _acme(db)
    db.commit()
    return tenant


def _context(email: str) -> dict:
    return {"email": email, "password": factories.DEFAULT_PASSWORD, **WEBHOOK_URLS}


def _login(client, email: str) -> dict:
    response = client.post(
        f"{BASE}/auth/login", json={"email": email, "password": factories.DEFAULT_PASSWORD}
    )
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def _error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:400]
    body = response.get_json()
    assert set(body) == {"error"} and set(body["error"]) == ERROR_KEYS, body
    error = body["error"]
    assert error["code"] == code, error
    assert error["request_id"] == response.headers["X-Request-ID"]
    assert all(set(d) == {"field", "message"} for d in error["details"]), error
    if field:
        assert any(d["field"] == field for d in error["details"]), error
    return error


def test_the_documents_examples(client, acme):
    failures = run_examples(client, BASE, load_examples("orchestrator"), _context(acme["email"]))
    assert not failures, "\n".join(failures)


def test_a_dialect_run_is_the_same_job_in_the_canonical_api(client, acme):
    headers = _login(client, acme["email"])
    created = client.post(
        f"{BASE}/orchestrate",
        json={"topic": "A REST API", "project_id": str(acme["project_id"])},
        headers=headers,
    )
    assert created.status_code == 201, created.get_json()
    run_id = created.get_json()["run_id"]
    assert created.headers["Location"].endswith(f"{BASE}/orchestration/{run_id}")
    assert [p["name"] for p in created.get_json()["phases"]] == [
        "Ideation", "Design", "Implementation", "Testing", "Deployment"
    ]  # fmt: skip
    job = client.get(f"/api/v1/jobs/{run_id}", headers=headers).get_json()
    assert job["id"] == run_id and job["kind"] == "orchestration" and job["status"] == "queued"
    canonical = client.get(f"/api/v1/orchestrations/{run_id}", headers=headers).get_json()
    dialect = client.get(f"{BASE}/orchestration/{run_id}", headers=headers).get_json()
    assert dialect["run"]["status"] == "started" and canonical["run"]["status"] == "queued"
    assert [p["id"] for p in dialect["phases"]] == [p["id"] for p in canonical["phases"]]
    # A canonical run is listed by the dialect too.
    other = client.post("/api/v1/orchestrate", json={"topic": "x"}, headers=headers).get_json()
    listed = client.get(f"{BASE}/orchestration", headers=headers).get_json()
    assert {row["id"] for row in listed["data"]} >= {run_id, other["id"]}


def test_another_organizations_ids_are_the_documents_not_found(client, db, acme):
    stranger = factories.organization(db)
    theirs = {
        "project": factories.project(db, stranger).id,
        "run": factories.job(db, stranger, kind="orchestration", input={"topic": "x"}).id,
        "hook_owner": factories.user(db, stranger),
    }
    db.commit()
    headers = _login(client, acme["email"])
    for method, path in [
        ("GET", f"/projects/{theirs['project']}"),
        ("PUT", f"/projects/{theirs['project']}"),
        ("DELETE", f"/projects/{theirs['project']}"),
        ("GET", f"/orchestration/{theirs['run']}"),
        ("POST", f"/orchestration/{theirs['run']}/cancel"),
        ("GET", f"/templates/{uuid.uuid4()}"),
        ("PUT", f"/webhooks/{uuid.uuid4()}"),
    ]:
        kwargs = {"json": {"name": "x"}} if method == "PUT" else {}
        response = client.open(f"{BASE}{path}", method=method, headers=headers, **kwargs)
        _error(response, 404, "RESOURCE_NOT_FOUND")
    # Starting a run on another organization's project: not found, on the field.
    response = client.post(
        f"{BASE}/orchestrate",
        json={"topic": "x", "project_id": str(theirs["project"])},
        headers=headers,
    )
    _error(response, 404, "RESOURCE_NOT_FOUND", "project_id")


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code", "field"),
    [
        ("/orchestrate", {"data": "{not json", "content_type": "application/json"}, 400,
         "VALIDATION_ERROR", None),
        ("/orchestrate", {"json": {}}, 422, "VALIDATION_ERROR", "topic"),
        ("/orchestrate", {"json": {"topic": "x", "agent_id": str(uuid.uuid4())}}, 422,
         "VALIDATION_ERROR", "agent_id"),
        ("/orchestrate", {"json": {"topic": "x", "custom_phases": []}}, 422,
         "VALIDATION_ERROR", "custom_phases"),
        ("/orchestrate", {"json": {"topic": "x", "settings": {"ai_model": "nope/nothing"}}},
         422, "VALIDATION_ERROR", None),
        ("/orchestrate", {"json": {"topic": "o\u0000k"}}, 422, "VALIDATION_ERROR", None),
        ("/orchestrate", {"data": "topic=x", "content_type": "text/plain"}, 415,
         "VALIDATION_ERROR", None),
        ("/orchestrate", {"data": b"{" + b" " * 3_000_000 + b"}",
                          "content_type": "application/json"}, 413, "VALIDATION_ERROR", None),
        ("/projects", {"json": {"name": "x", "github_repo": "a/b"}}, 422, "VALIDATION_ERROR",
         "github_repo"),
        ("/projects", {"json": {"name": "x", "priority": "whenever"}}, 422, "VALIDATION_ERROR",
         "priority"),
        ("/webhooks", {"json": {"url": "http://127.0.0.1:9/x", "events": ["nope"]}}, 422,
         "VALIDATION_ERROR", "events"),
        ("/templates", {"json": {"name": "x", "template_data": {"phases": []}}}, 422,
         "VALIDATION_ERROR", "template_data.phases"),
    ],
)  # fmt: skip
def test_bad_input_answers_in_the_documents_error_format(
    client, acme, path, kwargs, status, code, field
):
    headers = _login(client, acme["email"])
    response = client.post(f"{BASE}{path}", headers=headers, **kwargs)
    _error(response, status, code, field)


def test_bad_queries_auth_and_unknown_paths(client, acme):
    headers = _login(client, acme["email"])
    for query in ("limit=0", "limit=101", "offset=-1", "status=paused", "cursor=zzz",
                  "sort=nothing", "created_after=yesterday", "project_id=nope"):  # fmt: skip
        _error(
            client.get(f"{BASE}/orchestration?{query}", headers=headers), 422, "VALIDATION_ERROR"
        )
    _error(client.get(f"{BASE}/analytics/usage?granularity=year", headers=headers), 422,
           "VALIDATION_ERROR", "granularity")  # fmt: skip
    _error(client.get(f"{BASE}/projects?limit=" + "1" * 5000, headers=headers), 414,
           "VALIDATION_ERROR")  # fmt: skip
    _error(client.get(f"{BASE}/projects"), 401, "AUTHENTICATION_REQUIRED")
    _error(client.get(f"{BASE}/projects", headers={"Authorization": "Bearer nope"}), 401,
           "AUTHENTICATION_REQUIRED")  # fmt: skip
    wrong = client.post(
        f"{BASE}/auth/login", json={"email": acme["email"], "password": "wrong password"}
    )
    _error(wrong, 401, "AUTHENTICATION_REQUIRED")
    _error(client.get(f"{BASE}/nothing", headers=headers), 404, "RESOURCE_NOT_FOUND")
    _error(client.get(f"{BASE}/projects/not-a-uuid", headers=headers), 404, "RESOURCE_NOT_FOUND")
    _error(client.delete(f"{BASE}/orchestrate", headers=headers), 404, "RESOURCE_NOT_FOUND")
    # The canonical API keeps its own codes.
    assert client.get("/api/v1/projects").get_json()["error"]["code"] == "AUTHENTICATION_REQUIRED"


def test_roles_admin_manager_member_viewer(client, db, acme):
    org = acme["org"]
    users = {role: factories.user(db, org, role=role) for role in ("manager", "member", "viewer")}
    db.commit()
    viewer = _login(client, users["viewer"].email)
    assert client.get(f"{BASE}/projects", headers=viewer).status_code == 200
    assert client.get(f"{BASE}/orchestration", headers=viewer).status_code == 200
    for path, body in [("/orchestrate", {"topic": "x"}), ("/projects", {"name": "x"})]:
        _error(client.post(f"{BASE}{path}", json=body, headers=viewer), 403,
               "INSUFFICIENT_PERMISSIONS")  # fmt: skip
    member = _login(client, users["member"].email)
    _error(client.get(f"{BASE}/webhooks", headers=member), 403, "INSUFFICIENT_PERMISSIONS")
    assert client.post(f"{BASE}/projects", json={"name": "m"}, headers=member).status_code == 201
    manager = _login(client, users["manager"].email)
    assert client.get(f"{BASE}/webhooks", headers=manager).status_code == 200
    _error(client.put(f"{BASE}/organizations/current", json={"name": "x"}, headers=manager), 403,
           "INSUFFICIENT_PERMISSIONS")  # fmt: skip
    login = client.post(
        f"{BASE}/auth/login",
        json={"email": users["viewer"].email, "password": factories.DEFAULT_PASSWORD},
    ).get_json()
    assert login["user"]["role"] == "viewer"


def test_pagination_cursor_filters_and_sort(client, db, acme):
    org = acme["org"]
    for index in range(5):
        factories.project(db, org, name=f"P{index}", priority="low", status="archived")
    db.commit()
    headers = _login(client, acme["email"])
    first = client.get(
        f"{BASE}/projects?status=archived,completed&limit=2&sort=name", headers=headers
    ).get_json()
    assert [p["name"] for p in first["data"]] == ["P0", "P1"]
    page = first["pagination"]
    assert page["total"] == 5 and page["has_next"] and not page["has_prev"]
    second = client.get(
        f"{BASE}/projects?status=archived,completed&limit=2&sort=name&cursor={page['next_cursor']}",
        headers=headers,
    ).get_json()
    assert [p["name"] for p in second["data"]] == ["P2", "P3"]
    assert second["pagination"]["has_prev"] and second["pagination"]["prev_cursor"]
    default = client.get(f"{BASE}/projects", headers=headers).get_json()
    assert default["pagination"]["limit"] == 50 and default["pagination"]["total"] == 6
    newest = client.get(f"{BASE}/projects?sort=priority,-created_at", headers=headers).get_json()
    assert newest["data"][0]["priority"] == "low"


def test_rate_limit_headers_and_a_spent_quota(client, db, acme):
    headers = _login(client, acme["email"])
    response = client.get(f"{BASE}/projects", headers=headers)
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset",
            "X-RateLimit-Window"} <= set(response.headers.keys())  # fmt: skip
    acme["org"].api_quota_limit = 1
    db.commit()
    client.get(f"{BASE}/projects", headers=headers)
    spent = client.get(f"{BASE}/projects", headers=headers)
    _error(spent, 429, "QUOTA_EXCEEDED")
    assert int(spent.headers["Retry-After"]) > 0
    # Reading the quota and signing out stay free.
    assert client.get(f"{BASE}/organizations/current", headers=headers).status_code == 200
    assert client.post(f"{BASE}/auth/logout", headers=headers).status_code == 200
    _error(client.get(f"{BASE}/organizations/current", headers=headers), 401,
           "AUTHENTICATION_REQUIRED")  # fmt: skip


def test_a_spent_budget_is_the_documents_quota_exceeded(client, db, acme):
    factories.budget_limit(db, acme["org"], amount_usd="0", action_on_exceed="block")
    db.commit()
    headers = _login(client, acme["email"])
    response = client.post(f"{BASE}/orchestrate", json={"topic": "x"}, headers=headers)
    _error(response, 429, "QUOTA_EXCEEDED")


# -- end to end: real workers ------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
def test_orchestrate_runs_to_completion_with_per_phase_results(live_client, database_url):
    live_client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    with transaction(session_factory(database_url)) as session:
        email = _acme(session, public_template=False)["email"]
    headers = _login(live_client, email)
    projects = live_client.get(f"{BASE}/projects", headers=headers).get_json()
    project_id = projects["data"][0]["id"]
    started = live_client.post(
        f"{BASE}/orchestrate",
        json={
            "project_id": project_id,
            "topic": "Create a REST API for user management",
            "integration_enabled": True,
            "custom_phases": ["ideation", "design", "implementation"],
            "settings": {"ai_model": "sim/echo", "max_tokens": 2000, "temperature": 0.7},
        },
        headers=headers,
    )
    assert started.status_code == 201, started.get_json()
    run_id = started.get_json()["run_id"]
    url = f"{BASE}/orchestration/{run_id}"
    body = wait_for(live_client, url, headers, lambda b: b["run"]["status"] in TERMINAL, 90)
    # The document's GET /orchestration/{run_id} example, now with a finished run.
    example = next(
        e for e in load_examples("orchestrator") if e["path"] == "/orchestration/{run_id}"
    )
    vary = {"run.success_rate", "run.execution_time_ms", "run.total_phases",
            "run.completed_phases", "phases[].phase_code", "phases[].phase_name",
            "phases[].response_text", "phases[].execution_time_ms",
            "phases[].token_usage.prompt_tokens", "phases[].token_usage.completion_tokens",
            "phases[].token_usage.total_tokens", "integration_operations"}  # fmt: skip
    expect = {"run.status": "completed", "run.project_id": project_id}
    documented = example["response"]
    # "Detailed ideation response..." is text: the runner reads a trailing "..." as an id.
    documented["phases"][0]["response_text"] = "Detailed ideation response"
    problems = compare(documented, body, vary=vary, expect=expect)
    assert problems == []
    run, phases = body["run"], body["phases"]
    assert run["total_phases"] == run["completed_phases"] == 3 and run["success_rate"] == 100.0
    assert [p["phase_code"] for p in phases] == ["Phase 0", "Phase 1", "Phase 2"]
    assert [p["phase_name"] for p in phases] == ["Ideation", "Design", "Implementation"]
    for phase in phases:
        assert phase["status"] == "completed" and phase["response_text"]
        usage = phase["token_usage"]
        assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
        assert phase["execution_time_ms"] is not None and phase["completed_at"]
    assert run["execution_time_ms"] == sum(p["execution_time_ms"] for p in phases)
    # The same run, by the same id, in the canonical API.
    canonical = live_client.get(f"/api/v1/jobs/{run_id}", headers=headers).get_json()
    assert canonical["status"] == "completed" and canonical["kind"] == "orchestration"
    # Listed, and counted in the project's runs, the analytics and a finished run's cancel.
    listed = live_client.get(
        f"{BASE}/orchestration?project_id={project_id}&status=completed", headers=headers
    ).get_json()
    assert [(r["id"], r["success_rate"]) for r in listed["data"]] == [(run_id, 100.0)]
    assert listed["data"][0]["project"]["name"] == "E-commerce Platform"
    project = live_client.get(f"{BASE}/projects/{project_id}", headers=headers).get_json()
    assert project["orchestration_runs"][0]["status"] == "completed"
    usage = live_client.get(f"{BASE}/analytics/usage?days=1", headers=headers).get_json()
    assert usage["runs_summary"]["completed_runs"] == 1
    assert usage["api_usage"][0]["tokens"] == sum(p["token_usage"]["total_tokens"] for p in phases)
    again = live_client.post(f"{url}/cancel", headers=headers)
    _error(again, 409, "CONFLICT")
    # A second run's phases are now estimated from this one's (milliseconds, not the
    # default minute).
    second = live_client.post(
        f"{BASE}/orchestrate",
        json={
            "topic": "again",
            "custom_phases": ["ideation"],
            "settings": {"ai_model": "sim/echo"},
        },
        headers=headers,
    ).get_json()
    assert second["phases"][0]["estimated_duration"].endswith(("second", "seconds"))
    wait_for(live_client, f"{BASE}/orchestration/{second['run_id']}", headers,
             lambda b: b["run"]["status"] in TERMINAL, 90)  # fmt: skip
