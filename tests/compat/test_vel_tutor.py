"""Seed 000 (vel_tutor) through its dialect: the document's examples with real workers,
its error shapes (400 for validation), its roles, and the same jobs as /api/v1."""

from __future__ import annotations

import uuid

import pytest
from flask_jwt_extended import decode_token

from api.compat.vel_tutor import DIALECT
from models.db import session_factory, transaction
from tests import factories
from tests.compat.contract import load_examples, run_examples

BASE = DIALECT.base
PERPLEXITY = {
    "name": "perplexity",
    "base_url": "http://127.0.0.1:9/v1",
    "models": ["perplexity-sonar"],
    "prices": {"perplexity-sonar": {"input": "1.00", "output": "1.00"}},
}


def live_admin(database_url: str) -> dict:
    """A committed organization and admin, with credentials (workers see its rows)."""
    with transaction(session_factory(database_url)) as session:
        org = factories.organization(session)
        user = factories.user(session, org, role="admin")
        return {"org_id": org.id, "user_id": user.id, "email": user.email}


@pytest.fixture
def live_app(live_client):
    live_client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    return live_client


@pytest.mark.usefixtures("workers")
def test_the_documents_examples_with_real_workers(live_app, database_url):
    admin = live_admin(database_url)
    suffix = uuid.uuid4().hex[:8]
    context = {
        "email": admin["email"],
        "password": factories.DEFAULT_PASSWORD,
        "new_email": f"newuser-{suffix}@example.com",
        "changed_email": f"new-{suffix}@example.com",
    }
    # The document's agent prefers "perplexity-sonar" and later adds a "perplexity"
    # provider: its operator configures that OpenAI-compatible server (never called here).
    login = live_app.post(
        "/api/v1/auth/login", json={"email": admin["email"], "password": context["password"]}
    )
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    added = live_app.post("/api/v1/integrations", json=PERPLEXITY, headers=headers)
    assert added.status_code == 201, added.get_json()
    failures = run_examples(live_app, BASE, load_examples("vel_tutor"), context)
    assert not failures, "\n".join(failures)


# -- bad input: the document's {"error", "code"} with 400 for validation -------------------


@pytest.fixture
def admin_headers(app, db):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin")
    member = factories.user(db, org, role="member")
    db.commit()
    return {
        "admin": factories.auth_headers(app, admin),
        "member": factories.auth_headers(app, member),
        "org": org,
    }


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["code"] == code and isinstance(body["error"], str)
    assert set(body) == {"error", "code", "details", "timestamp"}
    if field:
        assert any(d["field"] == field for d in body["details"]), body
    return body


@pytest.mark.parametrize(
    ("kwargs", "status", "code", "field"),
    [
        ({"json": {"priority": "high"}}, 400, "VALIDATION_ERROR", "description"),
        ({"json": {"description": "x", "priority": "soon"}}, 400, "VALIDATION_ERROR", "priority"),
        ({"json": {"description": "x", "surprise": 1}}, 400, "VALIDATION_ERROR", "surprise"),
        ({"json": {"description": "a\u0000b"}}, 400, "VALIDATION_ERROR", "description"),
        ({"data": "{oops", "content_type": "application/json"}, 400, "VALIDATION_ERROR", None),
        ({"data": "description=x", "content_type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE",
         "Content-Type"),
        ({"data": b'{"description": "' + b"x" * 3_000_000 + b'"}',
          "content_type": "application/json"}, 413, "PAYLOAD_TOO_LARGE", None),
    ],
)  # fmt: skip
def test_bad_task_input(client, admin_headers, kwargs, status, code, field):
    response = client.post(f"{BASE}/tasks", headers=admin_headers["admin"], **kwargs)
    assert_error(response, status, code, field)


def test_auth_roles_lists_and_paths(client, db, admin_headers):
    assert_error(client.get(f"{BASE}/tasks"), 401, "AUTHENTICATION_REQUIRED")
    assert_error(client.get(f"{BASE}/users", headers=admin_headers["member"]), 403, "UNAUTHORIZED")
    assert_error(
        client.get(f"{BASE}/tasks?limit=101", headers=admin_headers["admin"]),
        400, "VALIDATION_ERROR", "limit",
    )  # fmt: skip
    assert_error(
        client.get(f"{BASE}/tasks?status=queued", headers=admin_headers["admin"]),
        400, "VALIDATION_ERROR", "status",
    )  # fmt: skip
    assert_error(
        client.get(f"{BASE}/tasks?limit=" + "1" * 5000, headers=admin_headers["admin"]),
        414, "URI_TOO_LONG",
    )  # fmt: skip
    assert_error(client.get(f"{BASE}/nothing-here"), 404, "NOT_FOUND")
    assert_error(
        client.get(f"{BASE}/tasks/not-a-uuid", headers=admin_headers["admin"]), 404, "NOT_FOUND"
    )
    login = client.post(f"{BASE}/auth/login", json={"email": "nobody@example.com"})
    assert_error(login, 400, "VALIDATION_ERROR", "password")
    # A member is the document's "user"; admins create users with role user or admin.
    created = client.post(
        f"{BASE}/users",
        json={"email": f"u-{uuid.uuid4().hex[:6]}@example.com", "password": "secure_password"},
        headers=admin_headers["admin"],
    )
    assert created.status_code == 201 and created.get_json()["role"] == "user"
    users = client.get(f"{BASE}/users?role=user", headers=admin_headers["admin"]).get_json()
    assert {u["role"] for u in users["data"]} == {"user"} and users["meta"]["total"] == 2


def test_a_task_is_the_same_job_and_another_orgs_is_not_found(client, db, admin_headers):
    created = client.post(
        f"{BASE}/tasks", json={"description": "Write a haiku"}, headers=admin_headers["admin"]
    )
    assert created.status_code == 201
    task_id = created.get_json()["id"]
    assert created.headers["Location"].endswith(f"{BASE}/tasks/{task_id}")
    job = client.get(f"/api/v1/jobs/{task_id}", headers=admin_headers["admin"]).get_json()
    assert job["id"] == task_id and job["status"] == "queued"
    stranger = factories.user(db, factories.organization(db), role="admin")
    db.commit()
    theirs = factories.auth_headers(client.application, stranger)
    for method, path in (("GET", f"/tasks/{task_id}"), ("POST", f"/tasks/{task_id}/cancel")):
        assert_error(client.open(f"{BASE}{path}", method=method, headers=theirs), 404, "NOT_FOUND")
    cancelled = client.post(f"{BASE}/tasks/{task_id}/cancel", headers=admin_headers["admin"])
    assert cancelled.get_json()["status"] == "cancelled"
    assert_error(
        client.post(f"{BASE}/tasks/{task_id}/cancel", headers=admin_headers["admin"]),
        409, "CONFLICT",
    )  # fmt: skip


def test_health_task_master_is_the_callers_task_server(client, admin_headers):
    """``task_master``: the organization's task-server integration when a token is given
    (``connected`` enabled, ``disabled``), else ``not_configured`` (health is public)."""

    def task_master(headers=None) -> str:
        response = client.get(f"{BASE}/health", headers=headers or {})
        assert response.status_code == 200
        return response.get_json()["dependencies"]["task_master"]

    admin = admin_headers["admin"]
    assert task_master() == "not_configured"
    assert task_master(admin) == "not_configured"
    created = client.post(
        "/api/v1/integrations",
        json={"name": "taskmaster", "kind": "task_server", "base_url": "http://127.0.0.1:9/tm",
              "api_key": "tm-key-0123456789"},
        headers=admin,
    )  # fmt: skip
    assert created.status_code == 201, created.get_json()
    assert task_master(admin) == "connected"
    assert task_master(admin_headers["member"]) == "connected"  # the organization's
    assert task_master() == "not_configured"  # anonymous: no organization to ask about
    assert task_master({"Authorization": "Bearer not-a-token"}) == "not_configured"
    disabled = client.patch(
        f"/api/v1/integrations/{created.get_json()['id']}", json={"enabled": False}, headers=admin
    )
    assert disabled.status_code == 200, disabled.get_json()
    assert task_master(admin) == "disabled"


def test_the_tokens_role_claim_is_the_documents_word(client, db, admin_headers):
    """A member's token says ``role: user`` (the document's word), and still works on the
    canonical API with the member's own permissions."""
    org = admin_headers["org"]
    member = factories.user(db, org, role="member")
    db.commit()
    login = client.post(
        f"{BASE}/auth/login", json={"email": member.email, "password": factories.DEFAULT_PASSWORD}
    )
    assert login.status_code == 200, login.get_json()
    body = login.get_json()
    assert body["user"]["role"] == "user"
    with client.application.app_context():
        claims = decode_token(body["token"])
    assert claims["role"] == "user"
    bearer = {"Authorization": f"Bearer {body['token']}"}
    assert client.get("/api/v1/jobs", headers=bearer).status_code == 200
    assert_error(client.get(f"{BASE}/users", headers=bearer), 403, "UNAUTHORIZED")
    refreshed = client.post(f"{BASE}/auth/refresh", json={"refresh_token": body["refresh_token"]})
    assert refreshed.status_code == 200, refreshed.get_json()
    with client.application.app_context():
        assert decode_token(refreshed.get_json()["token"])["role"] == "user"
