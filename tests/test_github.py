"""GitHub in (signed webhooks mirrored into the project) and out (pull request actions as
the project's GitHub App, against a local fake GitHub), and seed 001's task board."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid

import jwt
import pytest
import sqlalchemy as sa
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from baton.settings import reset_settings_cache
from models import GitHubDelivery, ProjectIssue, ProjectTask, WebhookDelivery, WebhookSubscription
from orchestration import github_client, secrets
from tests import factories
from tests.local_http import LocalServer, Reply

REPO = "acme/widgets"
SECRET = os.environ["GITHUB_WEBHOOK_SECRET"]


def send(client, event, payload, delivery=None, secret=SECRET, signature=None, raw=None):
    body = raw if raw is not None else json.dumps(payload).encode()
    digest = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    headers = {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-Hub-Signature-256": signature if signature is not None else f"sha256={digest}",
        "Content-Type": "application/json",
    }
    return client.post("/api/v1/webhooks/github", data=body, headers=headers)


def issue_payload(number=5, action="opened", state="open", title="Crash on save", **extra):
    return {
        "action": action,
        "issue": {
            "number": number,
            "title": title,
            "body": "Saving a widget crashes the app.",
            "state": state,
            "labels": [{"name": "bug"}],
            "user": {"login": "octocat"},
            "html_url": f"https://github.com/{REPO}/issues/{number}",
        },
        "repository": {"full_name": REPO},
        "installation": {"id": 42},
        **extra,
    }


def pr_payload(number=9, action="opened", body="Closes #5", merged=False, state="open"):
    return {
        "action": action,
        "pull_request": {
            "number": number,
            "title": "Fix the crash",
            "body": body,
            "state": state,
            "merged": merged,
            "head": {"ref": "fix-crash", "sha": "a" * 40},
            "base": {"ref": "main"},
            "user": {"login": "baton-bot"},
        },
        "repository": {"full_name": REPO},
        "installation": {"id": 42},
    }


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin")
    project = factories.project(
        db, org, github_repo=REPO, github_app_id="7", github_installation_id="42"
    )
    agents = {
        role: factories.agent(db, org, name=role.title(), type=role, project_id=project.id)
        for role in ("architect", "coder", "tester")
    }
    other = factories.user(db, factories.organization(db), role="admin")
    db.commit()
    return {
        "org": org,
        "project": project,
        "agents": agents,
        "h": factories.auth_headers(app, admin),
        "outsider": factories.auth_headers(app, other),
        "base": f"/api/v1/projects/{project.id}",
    }


def issues_of(db, tenant) -> int:
    # Other tests' end-to-end runs commit rows of their own projects: count this one's.
    where = ProjectIssue.project_id == tenant["project"].id
    return db.scalar(sa.select(sa.func.count()).where(where))


# -- GitHub in ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"signature": ""},
        {"signature": "sha256=" + "0" * 64},
        {"signature": "sha1=abc"},
        {"secret": "not-the-secret"},
    ],
)
def test_a_bad_signature_is_401_and_writes_nothing(client, db, tenant, kwargs):
    delivery = str(uuid.uuid4())
    response = send(client, "issues", issue_payload(), delivery=delivery, **kwargs)
    assert response.status_code == 401
    assert response.get_json()["error"]["code"] == "AUTHENTICATION_REQUIRED"
    assert db.get(GitHubDelivery, delivery) is None and issues_of(db, tenant) == 0


def test_the_signature_is_checked_before_the_body_is_parsed(client, db, tenant):
    response = send(client, "issues", None, raw=b"{not json", secret="wrong")
    assert response.status_code == 401


def test_an_issue_is_mirrored_once_per_delivery(client, db, tenant):
    delivery = str(uuid.uuid4())
    first = send(client, "issues", issue_payload(), delivery=delivery)
    assert first.status_code == 200 and first.get_json()["status"] == "processed"
    replay = send(client, "issues", issue_payload(title="Changed by a replay"), delivery=delivery)
    assert replay.status_code == 200 and replay.get_json()["status"] == "duplicate"
    issues = client.get(f"{tenant['base']}/issues", headers=tenant["h"]).get_json()
    assert issues["total"] == 1
    (issue,) = issues["items"]
    assert (issue["number"], issue["title"], issue["labels"]) == (5, "Crash on save", ["bug"])
    project = client.get(tenant["base"], headers=tenant["h"]).get_json()
    assert project["github_repo"] == REPO and project["stats"]["open_issues"] == 1
    # Comments, then closing: the open count follows.
    comment = {
        **issue_payload(action="created"),
        "comment": {"id": 77, "body": "Same here", "user": {"login": "hubot"}},
    }
    assert send(client, "issue_comment", comment).status_code == 200
    assert send(client, "issues", issue_payload(action="closed", state="closed")).status_code == 200
    closed = client.get(f"{tenant['base']}/issues?state=closed", headers=tenant["h"]).get_json()
    assert closed["items"][0]["comments"][0]["body"] == "Same here"
    project = client.get(tenant["base"], headers=tenant["h"]).get_json()
    assert project["stats"]["open_issues"] == 0


def test_unknown_repositories_and_other_installations_are_ignored(client, db, tenant):
    stranger = {**issue_payload(), "repository": {"full_name": "someone/else"}}
    response = send(client, "issues", stranger)
    assert response.status_code == 202 and response.get_json()["status"] == "ignored"
    hijack = {**issue_payload(), "installation": {"id": 999}}
    assert send(client, "issues", hijack).status_code == 202
    assert issues_of(db, tenant) == 0


@pytest.mark.parametrize(
    "event, payload, raw",
    [
        ("issues", None, b"{broken"),
        ("issues", None, b"[1, 2]"),
        ("issues", {"action": "opened", "repository": {"full_name": REPO}}, None),
        ("issues", {**issue_payload(), "issue": {"number": "five"}}, None),
        ("issues", {"issue": {"number": 1}}, None),
        ("push", {"repository": {"full_name": REPO}, "installation": {"id": 42}}, None),
    ],
)
def test_malformed_payloads_are_400_and_not_remembered(client, db, tenant, event, payload, raw):
    delivery = str(uuid.uuid4())
    response = send(client, event, payload, delivery=delivery, raw=raw)
    assert response.status_code == 400, response.get_json()
    assert db.get(GitHubDelivery, delivery) is None
    # GitHub's redelivery of a fixed payload under the same id is processed.
    assert send(client, "issues", issue_payload(), delivery=delivery).status_code == 200


def test_pull_requests_reviews_and_pushes(client, db, tenant):
    send(client, "issues", issue_payload())
    assert send(client, "pull_request", pr_payload()).status_code == 200
    review = {**pr_payload(action="submitted"), "review": {"state": "APPROVED"}}
    assert send(client, "pull_request_review", review).status_code == 200
    push = {
        "ref": "refs/heads/fix-crash",
        "after": "b" * 40,
        "repository": {"full_name": REPO},
        "installation": {"id": 42},
    }
    assert send(client, "push", push).status_code == 200
    prs = client.get(f"{tenant['base']}/pull-requests", headers=tenant["h"]).get_json()
    (pr,) = prs["items"]
    assert (pr["number"], pr["status"], pr["review_state"], pr["head_sha"]) == (
        9,
        "open",
        "approved",
        "b" * 40,
    )


def test_github_events_are_webhook_events(client, db, tenant):
    db.add(
        WebhookSubscription(
            organization_id=tenant["org"].id,
            url="http://127.0.0.1:9/hook",
            event_types=["github.issue", "github.pull_request"],
            encrypted_secret=secrets.encrypt("whsec_c2VjcmV0"),
            is_active=True,
            consecutive_failures=0,
        )
    )
    db.commit()
    send(client, "issues", issue_payload())
    send(client, "pull_request", pr_payload())
    types = db.scalars(
        sa.select(WebhookDelivery.event_type)
        .where(WebhookDelivery.organization_id == tenant["org"].id)
        .order_by(WebhookDelivery.created_at)
    ).all()
    assert types == ["github.issue", "github.pull_request"]


# -- the task board -------------------------------------------------------------------


def test_tasks_are_created_assigned_and_refused_when_the_agent_is_busy(client, db, tenant):
    coder = tenant["agents"]["coder"]
    factories.job(db, tenant["org"], agent_id=coder.id, status="running")
    db.commit()
    base = f"{tenant['base']}/tasks"
    body = {
        "title": "Refactor the saver",
        "priority": "high",
        "definition_of_done": "No crash; tests pass",
        "assigned_to_agent_id": str(coder.id),
    }
    busy = client.post(base, json=body, headers=tenant["h"])
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "AGENT_BUSY"
    created = client.post(
        base,
        json={k: v for k, v in body.items() if k != "assigned_to_agent_id"},
        headers=tenant["h"],
    )
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert (task["status"], task["definition_of_done"], task["assigned_to"]) == (
        "pending",
        "No crash; tests pass",
        None,
    )
    url = f"{base}/{task['id']}"
    busy = client.post(f"{url}/assign", json={"agent_id": str(coder.id)}, headers=tenant["h"])
    assert busy.status_code == 409 and busy.get_json()["error"]["code"] == "AGENT_BUSY"
    architect = tenant["agents"]["architect"]
    assigned = client.post(
        f"{url}/assign", json={"agent_id": str(architect.id)}, headers=tenant["h"]
    ).get_json()
    assert assigned["status"] == "in_progress" and assigned["assigned_to"]["type"] == "architect"
    assert assigned["job_id"]
    # The agent is working: completing is refused until its job ends.
    assert client.post(f"{url}/complete", headers=tenant["h"]).status_code == 409
    listed = client.get(f"{base}?assigned_to={architect.id}", headers=tenant["h"]).get_json()
    assert [t["id"] for t in listed["items"]] == [task["id"]]
    assert client.get(url, headers=tenant["outsider"]).status_code == 404


def test_bad_task_input_is_a_4xx(client, tenant):
    base = f"{tenant['base']}/tasks"
    assert client.post(base, json={}, headers=tenant["h"]).status_code == 422
    missing = client.post(
        base, json={"title": "x", "issue_id": str(uuid.uuid4())}, headers=tenant["h"]
    )
    assert missing.status_code == 422
    assert client.get(f"{base}?status=sleeping", headers=tenant["h"]).status_code == 422
    assert client.get(f"{base}/{uuid.uuid4()}", headers=tenant["h"]).status_code == 404


# -- GitHub out: pull request actions against a local fake GitHub ----------------------


@pytest.fixture
def fake_github(monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = key.public_key()
    state = {"merge_status": 200, "review_status": 200}

    def handle(request):
        if request.path == "/app/installations/42/access_tokens":
            claims = jwt.decode(
                request.headers["authorization"].removeprefix("Bearer "),
                public,
                algorithms=["RS256"],
            )
            assert claims["iss"] == "7"
            return Reply(201, {"token": "ghs_installation", "expires_at": "2099-01-01T00:00:00Z"})
        if request.headers.get("authorization") != "Bearer ghs_installation":
            return Reply(401, {"message": "Bad credentials"})
        if request.path.endswith("/reviews"):
            return Reply(state["review_status"], {"id": 1, "message": "review"})
        if request.path.endswith("/merge"):
            return Reply(state["merge_status"], {"merged": True, "message": "merge"})
        return Reply(404, {"message": "Not Found"})

    server = LocalServer(handle)
    monkeypatch.setenv("GITHUB_API_URL", server.url)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", pem)
    reset_settings_cache()
    github_client.reset_tokens()
    yield server, state
    server.close()
    monkeypatch.undo()
    reset_settings_cache()
    github_client.reset_tokens()


def test_approve_reviews_and_merges_as_the_app(client, tenant, fake_github):
    server, _state = fake_github
    send(client, "issues", issue_payload())
    client.post(f"{tenant['base']}/issues/{_issue_id(client, tenant)}/start", headers=tenant["h"])
    send(client, "pull_request", pr_payload(body="Fixes #5"))
    pr = client.get(f"{tenant['base']}/pull-requests", headers=tenant["h"]).get_json()["items"][0]
    approved = client.post(
        f"{tenant['base']}/pull-requests/{pr['id']}/approve", headers=tenant["h"]
    )
    assert approved.status_code == 200, approved.get_json()
    assert (approved.get_json()["status"], approved.get_json()["review_state"]) == (
        "merged",
        "approved",
    )
    review = server.requests_to(f"/repos/{REPO}/pulls/9/reviews")[0]
    assert review.json() == {"event": "APPROVE"}
    assert server.requests_to(f"/repos/{REPO}/pulls/9/merge")
    # The merged pull request completes the issue's tasks it was linked to.
    tasks = client.get(f"{tenant['base']}/tasks", headers=tenant["h"]).get_json()["items"]
    assert tasks and all(t["status"] == "completed" and t["pr"]["number"] == 9 for t in tasks)


def test_reject_requests_changes_and_failures_are_github_api_error(client, tenant, fake_github):
    server, state = fake_github
    send(client, "pull_request", pr_payload(body=""))
    pr = client.get(f"{tenant['base']}/pull-requests", headers=tenant["h"]).get_json()["items"][0]
    url = f"{tenant['base']}/pull-requests/{pr['id']}"
    assert client.post(f"{url}/reject", json={}, headers=tenant["h"]).status_code == 422
    rejected = client.post(f"{url}/reject", json={"feedback": "Add tests"}, headers=tenant["h"])
    assert (
        rejected.status_code == 200 and rejected.get_json()["review_state"] == "changes_requested"
    )
    assert server.requests_to(f"/repos/{REPO}/pulls/9/reviews")[0].json() == {
        "event": "REQUEST_CHANGES",
        "body": "Add tests",
    }
    state["review_status"] = 500
    failed = client.post(f"{url}/approve", headers=tenant["h"])
    assert failed.status_code == 502
    assert failed.get_json()["error"]["code"] == "GITHUB_API_ERROR"
    # Checks failing: GitHub refuses the merge; the pull request stays open, approved.
    state["review_status"], state["merge_status"] = 200, 405
    kept = client.post(f"{url}/approve", headers=tenant["h"]).get_json()
    assert (kept["status"], kept["review_state"]) == ("open", "approved")


def test_github_unreachable_is_github_api_error(client, tenant, monkeypatch):
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", pem)
    reset_settings_cache()
    github_client.reset_tokens()
    try:
        send(client, "pull_request", pr_payload(body=""))
        pr = client.get(f"{tenant['base']}/pull-requests", headers=tenant["h"]).get_json()
        url = f"{tenant['base']}/pull-requests/{pr['items'][0]['id']}/approve"
        failed = client.post(url, headers=tenant["h"])
        assert failed.status_code == 502
        assert failed.get_json()["error"]["code"] == "GITHUB_API_ERROR"
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def _issue_id(client, tenant) -> str:
    issues = client.get(f"{tenant['base']}/issues", headers=tenant["h"]).get_json()
    return issues["items"][0]["id"]


def test_starting_an_issue_makes_one_task_per_role(client, db, tenant):
    send(client, "issues", issue_payload())
    issue_id = _issue_id(client, tenant)
    started = client.post(f"{tenant['base']}/issues/{issue_id}/start", headers=tenant["h"])
    assert started.status_code == 201, started.get_json()
    tasks = started.get_json()["items"]
    assert [t["assigned_to"]["type"] for t in tasks] == ["architect", "coder", "tester"]
    assert all(t["issue"]["number"] == 5 and t["job_id"] for t in tasks)
    assert {t["status"] for t in tasks} == {"in_progress", "testing"}
    again = client.post(f"{tenant['base']}/issues/{issue_id}/start", headers=tenant["h"])
    assert again.status_code == 409
    listed = client.get(f"{tenant['base']}/issues/{issue_id}/tasks", headers=tenant["h"]).get_json()
    assert listed["total"] == 3
    where = ProjectTask.project_id == tenant["project"].id
    assert db.scalar(sa.select(sa.func.count()).where(where)) == 3
