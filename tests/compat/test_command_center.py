"""Seed 001 (multi-agent command center) through its dialect: the document's examples,
its error shape for bad input, another organization's ids, 2FA login, rate-limit
headers, and the same rows as the canonical /api/v1."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import time
import uuid
from datetime import UTC, datetime

import pyotp
import pytest

from api.compat.command_center import DIALECT
from orchestration import live
from tests import factories
from tests.compat.contract import load_examples, run_examples

BASE = DIALECT.base
ERROR_KEYS = {"code", "message", "details", "request_id"}


@pytest.fixture
def admin(app, db):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"  # these tests sign in often
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    db.commit()
    return {"org": org, "user": user}


def deliver_issue(client, repo="owner/repo", installation=67890, number=5) -> None:
    """GitHub's signed ``issues`` delivery, through the dialect's webhook."""
    payload = {
        "action": "opened",
        "issue": {
            "number": number, "title": "Crash on save", "body": "Saving crashes.",
            "state": "open", "labels": [{"name": "bug"}], "user": {"login": "octocat"},
            "html_url": f"https://github.com/{repo}/issues/{number}",
        },
        "repository": {"full_name": repo},
        "installation": {"id": installation},
    }  # fmt: skip
    body = json.dumps(payload).encode()
    secret = os.environ["GITHUB_WEBHOOK_SECRET"].encode()
    response = client.post(
        f"{BASE}/webhooks/github",
        data=body,
        headers={
            "X-GitHub-Event": "issues",
            "X-GitHub-Delivery": str(uuid.uuid4()),
            "X-Hub-Signature-256": "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest(),
            "Content-Type": "application/json",
        },
    )
    assert response.status_code == 200, response.get_json()


def test_the_documents_examples(client, db, admin):
    context = {"username": admin["user"].username, "password": factories.DEFAULT_PASSWORD}
    failures: list[str] = []
    for example in load_examples("command_center"):
        if example.get("setup") == "github_issue":
            deliver_issue(client)
        elif example.get("setup") == "notification":
            note = factories.notification(db, admin["org"], severity="warning")
            db.commit()
            context["notification_id"] = str(note.id)
        failures += run_examples(client, BASE, [example], context)
    assert failures == [], "\n".join(failures)


def _login(client, user) -> dict:
    response = client.post(
        f"{BASE}/auth/login",
        json={"username": user.username, "password": factories.DEFAULT_PASSWORD},
    )
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_two_factor_login_is_the_documents(app, client, db, admin):
    user = admin["user"]
    headers = _login(client, user)
    setup = client.post("/api/v1/auth/2fa/setup", json={}, headers=headers).get_json()
    code = pyotp.TOTP(setup["secret"]).now()
    enabled = client.post("/api/v1/auth/2fa/enable", json={"code": code}, headers=headers)
    assert enabled.status_code == 200, enabled.get_json()
    first = client.post(
        f"{BASE}/auth/login",
        json={"username": user.username, "password": factories.DEFAULT_PASSWORD},
    ).get_json()
    assert first["requires_2fa"] is True and "access_token" not in first
    wrong = client.post(
        f"{BASE}/auth/2fa/verify", json={"temp_token": first["temp_token"], "code": "000000"}
    )
    assert wrong.status_code == 401 and wrong.get_json()["error"]["code"] == "UNAUTHORIZED"
    verified = client.post(
        f"{BASE}/auth/2fa/verify",
        # The next 30-second step: the code enable took is spent (no replay).
        json={
            "temp_token": first["temp_token"],
            "code": pyotp.TOTP(setup["secret"]).at(time.time() + 30),
        },
    )
    assert verified.status_code == 200, verified.get_json()
    body = verified.get_json()
    assert body["requires_2fa"] is False and body["token_type"] == "bearer"
    assert set(body) >= {"access_token", "refresh_token", "expires_in"}


def test_a_dialect_project_is_the_canonical_one_and_money_is_a_number(client, admin):
    headers = _login(client, admin["user"])
    created = client.post(f"{BASE}/projects", json={"name": "Shop"}, headers=headers).get_json()
    canonical = client.get(f"/api/v1/projects/{created['id']}", headers=headers).get_json()
    assert canonical["name"] == "Shop" and canonical["stats"]["today_cost"] == "0.00"
    assert created["stats"]["today_cost"] == 0 and isinstance(created["stats"]["today_cost"], float)
    archived = client.patch(
        f"{BASE}/projects/{created['id']}", json={"is_active": False}, headers=headers
    ).get_json()
    assert archived["is_active"] is False
    listed = client.get(f"{BASE}/projects", query_string={"is_active": "false"}, headers=headers)
    assert [p["id"] for p in listed.get_json()["items"]] == [created["id"]]
    assert client.get(f"{BASE}/projects?is_active=true", headers=headers).get_json()["total"] == 0


def test_pages_are_page_and_pages(client, admin):
    headers = _login(client, admin["user"])
    for n in range(5):
        client.post(f"{BASE}/projects", json={"name": f"p{n}"}, headers=headers)
    page = client.get(f"{BASE}/projects?page=2&limit=2", headers=headers).get_json()
    assert (page["total"], page["page"], page["pages"], len(page["items"])) == (5, 2, 3, 2)
    last = client.get(f"{BASE}/projects?page=3&limit=2", headers=headers).get_json()
    assert len(last["items"]) == 1


def test_spend_by_project_and_agent_page_like_every_list(client, db, admin):
    """ "All list endpoints use offset-based pagination": by-project and by-agent page
    their rows; total_spent stays the whole range's."""
    org = admin["org"]
    for n in range(3):
        project = factories.project(db, org, name=f"p{n}")
        agent = factories.agent(db, org, name=f"a{n}")
        factories.usage_record(db, org, project_id=project.id, agent_id=agent.id, cost="0.5")
    db.commit()
    headers = _login(client, admin["user"])
    for path in ("/budget/by-project", "/budget/by-agent"):
        page = client.get(f"{BASE}{path}?page=2&limit=2", headers=headers).get_json()
        assert (page["total"], page["page"], page["pages"], len(page["items"])) == (3, 2, 2, 1)
        assert page["total_spent"] == 1.5
        refused = client.get(f"{BASE}{path}?limit=101", headers=headers)
        assert refused.status_code == 422 and "limit" in refused.get_json()["error"]["details"]


def test_another_organizations_ids_are_the_documents_not_found(client, db, admin):
    stranger = factories.organization(db)
    project = factories.project(db, stranger)
    agent = factories.agent(db, stranger, project_id=project.id)
    limit = factories.budget_limit(db, stranger)
    note = factories.notification(db, stranger)
    db.commit()
    headers = _login(client, admin["user"])
    p = f"{BASE}/projects/{project.id}"
    for method, path, body in [
        ("GET", p, None),
        ("PATCH", p, {"name": "x"}),
        ("DELETE", p, None),
        ("GET", f"{p}/agents", None),
        ("PATCH", f"{p}/agents/{agent.id}", {"name": "x"}),
        ("POST", f"{p}/agents/{agent.id}/reset", None),
        ("GET", f"{p}/conversations", None),
        ("GET", f"{p}/issues", None),
        ("GET", f"{p}/tasks", None),
        ("GET", f"{p}/pull-requests", None),
        ("PATCH", f"{BASE}/budget/limits/{limit.id}", {"name": "x"}),
        ("DELETE", f"{BASE}/budget/limits/{limit.id}", None),
        ("POST", f"{BASE}/notifications/{note.id}/read", None),
    ]:
        kwargs = {"json": body} if body is not None else {}
        response = client.open(path, method=method, headers=headers, **kwargs)
        assert response.status_code == 404, (method, path, response.get_json())
        error = response.get_json()["error"]
        assert error["code"] == "RESOURCE_NOT_FOUND" and set(error) == ERROR_KEYS


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "code"),
    [
        ("/projects", {"data": "{not json", "content_type": "application/json"}, 400,
         "VALIDATION_ERROR"),
        ("/projects", {"json": {}}, 422, "VALIDATION_ERROR"),
        ("/projects", {"json": {"name": "x", "extra": 1}}, 422, "VALIDATION_ERROR"),
        ("/projects", {"json": {"name": "x", "github_repo": "not a repo"}}, 422,
         "VALIDATION_ERROR"),
        ("/projects", {"json": {"name": "o\u0000k"}}, 422, "VALIDATION_ERROR"),
        ("/projects", {"data": "name=x", "content_type": "text/plain"}, 415,
         "UNSUPPORTED_MEDIA_TYPE"),
        ("/projects", {"data": b"{" + b" " * 3_000_000 + b"}", "content_type": "application/json"},
         413, "PAYLOAD_TOO_LARGE"),
        ("/budget/limits", {"json": {"name": "x", "scope_type": "galaxy", "amount_usd": 1,
                                     "period": "daily"}}, 422, "VALIDATION_ERROR"),
        ("/budget/limits", {"json": {"name": "x", "scope_type": "global", "amount_usd": -1,
                                     "period": "daily"}}, 422, "VALIDATION_ERROR"),
    ],
)  # fmt: skip
def test_bad_input_answers_in_the_documents_error_format(client, admin, path, kwargs, status, code):
    headers = _login(client, admin["user"])
    response = client.post(f"{BASE}{path}", headers=headers, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    error = response.get_json()["error"]
    assert error["code"] == code and set(error) == ERROR_KEYS
    assert isinstance(error["details"], dict)
    uuid.UUID(error["request_id"])


def test_bad_agent_and_query_input(client, admin):
    headers = _login(client, admin["user"])
    project = client.post(f"{BASE}/projects", json={"name": "p"}, headers=headers).get_json()
    url = f"{BASE}/projects/{project['id']}/agents"
    for body in [
        {"name": "a", "type": "wizard"},
        {"name": "a", "type": "coder", "model_config": {"temperature": 3}},
        {"name": "a", "type": "coder", "model_config": {"max_tokens": 99}},
        {"name": "a", "type": "coder", "model_config": {"model": "nobody/nothing"}},
    ]:
        response = client.post(url, json=body, headers=headers)
        assert response.status_code == 422, (body, response.get_json())
        assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    for query in ["limit=101", "page=0", "is_active=maybe", "nope=1"]:
        response = client.get(f"{BASE}/projects?{query}", headers=headers)
        assert response.status_code == 422, query
    conversations = f"{BASE}/projects/{project['id']}/conversations"
    assert client.get(f"{conversations}?type=chat", headers=headers).status_code == 422
    assert client.get(f"{conversations}/not-a-uuid", headers=headers).status_code == 404


def test_auth_errors_rate_limit_headers_and_unknown_paths(client, admin):
    no_token = client.get(f"{BASE}/projects")
    assert no_token.status_code == 401
    assert no_token.get_json()["error"]["code"] == "UNAUTHORIZED"
    bad = client.get(f"{BASE}/projects", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.get_json()["error"]["code"] == "UNAUTHORIZED"
    headers = _login(client, admin["user"])
    ok = client.get(f"{BASE}/projects", headers=headers)
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        ok.headers.keys()
    )
    unknown = client.get(f"{BASE}/nothing", headers=headers)
    assert unknown.status_code == 404
    assert unknown.get_json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    # The canonical API keeps its own envelope (with its timestamp).
    assert "timestamp" in client.get("/api/v1/projects").get_json()["error"]


def test_a_viewer_is_forbidden_in_the_documents_shape(client, db, admin):
    viewer = factories.user(db, admin["org"], role="viewer")
    db.commit()
    response = client.post(f"{BASE}/emergency/pause-all", headers=_login(client, viewer))
    assert response.status_code == 403
    assert response.get_json()["error"]["code"] == "FORBIDDEN"


@pytest.mark.parametrize(
    ("kind", "job_status", "task_word", "agent_word"),
    [
        ("job.queued", "queued", "pending", None),
        ("job.running", "running", "in_progress", "working"),
        ("job.paused", "paused", "in_progress", "idle"),
        ("job.completed", "completed", "completed", "idle"),
        ("job.cancelled", "cancelled", "failed", "idle"),
        ("job.failed", "failed", "failed", "error"),
    ],
)
def test_socketio_events_use_the_documents_status_words(kind, job_status, task_word, agent_word):
    """task_progress says pending|in_progress|...|completed|failed and agent_status
    idle|working|error (Baton's own word stays in ``job_status`` / ``paused``)."""
    event = {
        "type": kind, "job_id": uuid.uuid4(), "agent_id": uuid.uuid4(), "seq": 3,
        "created_at": datetime.now(UTC), "status": job_status, "progress": 45,
        "kind": "task", "title": "Compile", "data": {"error": "boom"},
    }  # fmt: skip
    # As a stream process derives them: from the job channel's message, as Redis carried it.
    message = json.loads(json.dumps(live.event_message(event), default=str))
    events = dict(live.socketio_events(message))
    progress = events["task_progress"]
    assert progress["status"] == task_word and progress["job_status"] == job_status
    assert {"task_id", "progress", "status", "message"} <= set(progress)
    if agent_word is None:
        assert "agent_status" not in events
    else:
        status = events["agent_status"]
        assert status["status"] == agent_word and status["paused"] is (kind == "job.paused")
        assert {"agent_id", "status", "current_task", "timestamp"} <= set(status)
        running = kind == "job.running"
        assert status["current_task"] == ({"id": progress["task_id"], "title": "Compile"}
                                          if running else None)  # fmt: skip
    if kind == "job.failed":
        assert events["error"]["code"] and isinstance(events["error"]["details"], dict)
