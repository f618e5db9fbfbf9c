"""Seed 002 (Task Assistant) through its dialect: the document's examples on real workers,
its FastAPI-style errors for every bad input, the same jobs as /api/v1, tenancy, limits,
and one end-to-end flow (register, login, task to completion, chat streamed as SSE)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from api.compat.task_assistant import DIALECT
from tests import factories
from tests.compat.contract import load_examples, run_examples, sse_data

BASE = DIALECT.base
SIM = {"provider": "sim", "model": "sim/echo"}
PASSWORD = "SecureP@ssw0rd123"


def _email() -> str:
    return f"user-{uuid.uuid4().hex[:12]}@example.com"


def _wait_completed(client, headers, job_id, timeout=90.0) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        job = client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
        if job["status"] in ("completed", "failed", "cancelled") or time.monotonic() > deadline:
            assert job["status"] == "completed", job
            return job
        time.sleep(0.2)


# -- the document's examples, on real workers ------------------------------------------------


@pytest.mark.usefixtures("workers")
def test_the_documents_examples(live_client):
    live_client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    context = {
        "email": _email(),
        "password": PASSWORD,
        "webhook_url": "http://127.0.0.1:9/webhooks/taskassistant",
        **SIM,
    }
    failures: list[str] = []
    batch: list[dict] = []
    for example in load_examples("task_assistant"):
        if "wait_for" in example:
            # A documented final state: run what came before, then let the job finish.
            failures += run_examples(live_client, BASE, batch, context)
            batch = []
            headers = {"Authorization": f"Bearer {context['token']}"}
            _wait_completed(live_client, headers, context[example["wait_for"]])
        batch.append(example)
    failures += run_examples(live_client, BASE, batch, context)
    assert failures == []


# -- one end-to-end flow ----------------------------------------------------------------------


@pytest.mark.usefixtures("workers")
def test_end_to_end_register_login_task_and_streamed_chat(live_client):
    client = live_client
    client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    email = _email()
    registered = client.post(
        f"{BASE}/auth/register",
        json={"email": email, "password": PASSWORD, "full_name": "Jo", "tenant_name": "Acme"},
    )
    assert registered.status_code == 201, registered.get_json()
    login = client.post(f"{BASE}/auth/login", json={"email": email, "password": PASSWORD})
    assert login.status_code == 200
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        login.headers.keys()
    )
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}

    created = client.post(
        f"{BASE}/tasks",
        json={"title": "Analyze sales data", "description": "Generate Q4 insights"},
        headers=headers,
    )
    assert created.status_code == 201, created.get_json()
    task = created.get_json()
    assert task["status"] == "pending" and task["priority"] == "medium"
    assert created.headers["Location"].endswith(f"{BASE}/tasks/{task['id']}")
    job = _wait_completed(client, headers, task["id"])  # the same id on the canonical API
    assert job["kind"] == "task"
    done = client.get(f"{BASE}/tasks/{task['id']}", headers=headers).get_json()
    assert done["status"] == "completed" and done["completed_at"]
    assert isinstance(done["result"], dict) and done["result"]
    listed = client.get(f"{BASE}/tasks", query_string={"status": "completed"}, headers=headers)
    assert [t["id"] for t in listed.get_json()["items"]] == [task["id"]]
    assert listed.get_json()["limit"] == 50

    conversation = client.post(
        f"{BASE}/chat/conversations",
        json={"title": "Sales Q&A", **SIM, "system_prompt": "You are a helpful sales analyst."},
        headers=headers,
    )
    assert conversation.status_code == 201, conversation.get_json()
    conversation_id = conversation.get_json()["id"]
    streamed = client.post(
        f"{BASE}/chat/conversations/{conversation_id}/messages",
        json={"message": "Explain the sales trends in detail", "stream": True},
        headers=headers,
    )
    assert streamed.status_code == 200 and streamed.mimetype == "text/event-stream"
    events = sse_data(streamed.get_data(as_text=True))
    assert events[0]["type"] == "start" and uuid.UUID(events[0]["message_id"])
    assert events[-1]["type"] == "done"
    assert isinstance(events[-1]["tokens_used"], int) and events[-1]["tokens_used"] > 0
    assert isinstance(events[-1]["cost"], float)
    tokens = [e["content"] for e in events if e["type"] == "token"]
    assert tokens and "".join(tokens)
    # The next message's history holds the streamed reply: a waited answer this time.
    waited = client.post(
        f"{BASE}/chat/conversations/{conversation_id}/messages",
        json={"message": "And the top product?"},
        headers=headers,
    )
    assert waited.status_code == 200, waited.get_json()
    reply = waited.get_json()
    assert (
        reply["role"] == "assistant"
        and reply["content"]
        and reply["conversation_id"] == (conversation_id)
    )
    assert isinstance(reply["cost"], float) and reply["tokens_used"] > 0


# -- errors in the document's shape -----------------------------------------------------------


@pytest.fixture
def admin(app, db, client):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    db.commit()
    login = client.post(
        f"{BASE}/auth/login", json={"email": user.email, "password": factories.DEFAULT_PASSWORD}
    )
    assert login.status_code == 200, login.get_json()
    token = login.get_json()["access_token"]
    return {"org": org, "user": user, "headers": {"Authorization": f"Bearer {token}"}}


def _detail_shape(body: dict, code: str) -> None:
    assert set(body) <= {"detail", "error_code", "timestamp", "retry_after"}, body
    assert body["error_code"] == code and body["timestamp"].endswith("Z")


@pytest.mark.parametrize(
    ("path", "kwargs", "status", "loc", "kind"),
    [
        # The document's own field names, never Baton's (organization_name, username).
        ("/auth/register", {"json": {"email": "a@example.com", "password": "Correct-Horse-9"}},
         422, ["body", "tenant_name"], "value_error.missing"),
        ("/auth/login", {"json": {"password": "Correct-Horse-9"}}, 422, ["body", "email"],
         "value_error.missing"),
        ("/tasks", {"json": {"title": "x", "priority": "critical"}}, 422,
         ["body", "priority"], "type_error.enum"),
        ("/tasks", {"json": {"title": "x", "bogus": 1}}, 422, ["body", "bogus"],
         "value_error.extra"),
        ("/tasks", {"json": {"title": "x", "due_date": "tomorrow"}}, 422, ["body", "due_date"],
         "value_error.datetime"),
        ("/tasks", {"json": {"title": "x", "metadata": []}}, 422, ["body", "metadata"],
         "type_error.dict"),
        ("/agents", {"json": {"description": "no name"}}, 422, ["body", "name"],
         "value_error.missing"),
        ("/agents", {"json": {"name": "a", "model": "no-such-model-9"}}, 422, ["body", "model"],
         "value_error"),
        ("/agents", {"json": {"name": "a", "provider": "nobody"}}, 422, ["body", "provider"],
         "value_error"),
        ("/agents", {"json": {"name": "a", "tools": ["hammer"]}}, 422, ["body", "tools", 0],
         "value_error"),
        ("/chat/conversations", {"json": {"provider": "nobody"}}, 422, ["body", "provider"],
         "value_error"),
        ("/chat/conversations", {"json": {"model": "no-such-model-9"}}, 422, ["body", "model"],
         "value_error"),
        ("/webhooks", {"json": {"url": "ftp://x", "event_types": ["agent.completed"]}}, 422,
         ["body", "url"], "value_error.url"),
        ("/webhooks", {"json": {"url": "http://127.0.0.1:9/x", "event_types": ["nope"]}}, 422,
         ["body", "event_types"], "value_error"),
        ("/webhooks", {"json": {"url": "http://127.0.0.1:9/x", "event_types": ["agent.completed"],
                                "secret": "short"}}, 422, ["body", "secret"], "value_error.const"),
    ],
)  # fmt: skip
def test_validation_errors_are_fastapis(client, admin, path, kwargs, status, loc, kind):
    response = client.post(f"{BASE}{path}", headers=admin["headers"], **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    _detail_shape(body, "VALIDATION_ERROR")
    assert isinstance(body["detail"], list) and body["detail"]
    first = body["detail"][0]
    assert set(first) == {"loc", "msg", "type"}
    assert first["loc"] == loc and first["type"] == kind and first["msg"]


def test_query_errors_and_message_errors(client, admin):
    bad = client.get(f"{BASE}/tasks", query_string={"limit": 500}, headers=admin["headers"])
    assert bad.status_code == 422 and bad.get_json()["detail"][0]["loc"] == ["query", "limit"]
    status = client.get(f"{BASE}/tasks?status=running", headers=admin["headers"])
    assert status.status_code == 422 and status.get_json()["detail"][0]["loc"][:2] == [
        "query",
        "status",
    ]
    conversation = client.post(
        f"{BASE}/chat/conversations", json={"title": "t", **SIM}, headers=admin["headers"]
    ).get_json()
    missing = client.post(
        f"{BASE}/chat/conversations/{conversation['id']}/messages",
        json={"stream": True},
        headers=admin["headers"],
    )
    assert missing.status_code == 422
    assert missing.get_json()["detail"] == [
        {"loc": ["body", "message"], "msg": "field required", "type": "value_error.missing"}
    ]


@pytest.mark.parametrize(
    ("kwargs", "status", "code"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "VALIDATION_ERROR"),
        ({"data": "title=x", "content_type": "text/plain"}, 415, "UNSUPPORTED_MEDIA_TYPE"),
        ({"json": {"title": "o\u0000k"}}, 422, "VALIDATION_ERROR"),
        ({"data": b"{" + b" " * 3_000_000 + b"}", "content_type": "application/json"}, 413,
         "PAYLOAD_TOO_LARGE"),
    ],
)  # fmt: skip
def test_malformed_bodies_answer_in_the_documents_shape(client, admin, kwargs, status, code):
    response = client.post(f"{BASE}/tasks", headers=admin["headers"], **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    _detail_shape(response.get_json(), code)


def test_auth_errors_unknown_paths_and_long_urls(client, admin):
    for headers in ({}, {"Authorization": "Bearer nope"}):
        response = client.get(f"{BASE}/tasks", headers=headers)
        assert response.status_code == 401
        _detail_shape(response.get_json(), "AUTHENTICATION_REQUIRED")
        assert isinstance(response.get_json()["detail"], str)
    wrong = client.post(f"{BASE}/auth/login", json={"email": "x@y.z", "password": "nopenope"})
    assert wrong.status_code == 401 and isinstance(wrong.get_json()["detail"], str)
    assert client.post(f"{BASE}/auth/refresh").status_code == 401
    unknown = client.get(f"{BASE}/nothing-here", headers=admin["headers"])
    assert unknown.status_code == 404
    _detail_shape(unknown.get_json(), "RESOURCE_NOT_FOUND")
    long = client.get(f"{BASE}/tasks?limit=" + "1" * 5000, headers=admin["headers"])
    assert long.status_code == 414
    _detail_shape(long.get_json(), "URI_TOO_LONG")
    not_uuid = client.get(f"{BASE}/tasks/not-a-uuid", headers=admin["headers"])
    assert not_uuid.status_code == 404 and "detail" in not_uuid.get_json()
    # The canonical API keeps its own envelope.
    assert "code" in client.get("/api/v1/jobs").get_json()["error"]


def test_a_viewer_is_forbidden_in_the_documents_shape(app, client, db, admin):
    viewer = factories.user(db, admin["org"], role="viewer")
    db.commit()
    token = client.post(
        f"{BASE}/auth/login", json={"email": viewer.email, "password": factories.DEFAULT_PASSWORD}
    ).get_json()["access_token"]
    response = client.post(
        f"{BASE}/tasks", json={"title": "x"}, headers={"Authorization": f"Bearer {token}"}
    )
    assert response.status_code == 403
    _detail_shape(response.get_json(), "FORBIDDEN")


def test_another_organizations_ids_are_the_documents_not_found(client, db, admin):
    stranger = factories.organization(db)
    theirs = factories.job(db, stranger, kind="task", input={"title": "secret"})
    their_agent = factories.agent(db, stranger)
    db.commit()
    headers = admin["headers"]
    answers = [
        client.get(f"{BASE}/tasks/{theirs.id}", headers=headers),
        client.post(
            f"{BASE}/agents/{their_agent.id}/execute",
            json={"input": "hi", "wait_seconds": 0},
            headers=headers,
        ),
        client.post(
            f"{BASE}/chat/conversations/{uuid.uuid4()}/messages",
            json={"message": "hi"},
            headers=headers,
        ),
    ]
    for response in answers:
        assert response.status_code == 404, response.get_json()
        _detail_shape(response.get_json(), "RESOURCE_NOT_FOUND")
        assert isinstance(response.get_json()["detail"], str)
    listed = client.get(f"{BASE}/tasks", headers=headers).get_json()
    assert listed["total"] == 0


def test_a_dialect_task_is_the_same_job_in_the_canonical_api(client, admin):
    created = client.post(
        f"{BASE}/tasks", json={"title": "T", "priority": "low"}, headers=admin["headers"]
    )
    assert created.status_code == 201
    task_id = created.get_json()["id"]
    job = client.get(f"/api/v1/jobs/{task_id}", headers=admin["headers"]).get_json()
    assert job["id"] == task_id and job["kind"] == "task" and job["status"] == "queued"
    canonical = client.get(f"/api/v1/tasks/{task_id}", headers=admin["headers"])
    assert canonical.status_code == 200
    # And a canonical urgent task reads as the document's "high".
    urgent = client.post(
        "/api/v1/tasks", json={"title": "U", "priority": "urgent"}, headers=admin["headers"]
    ).get_json()["id"]
    high = client.get(f"{BASE}/tasks?priority=high", headers=admin["headers"]).get_json()
    assert [t["id"] for t in high["items"]] == [urgent]
    assert high["items"][0]["priority"] == "high"


def test_refresh_keeps_the_login_and_logout_ends_it(client, admin):
    refreshed = client.post(f"{BASE}/auth/refresh", headers=admin["headers"])
    assert refreshed.status_code == 200
    new = {"Authorization": f"Bearer {refreshed.get_json()['access_token']}"}
    assert client.get(f"{BASE}/tasks", headers=new).status_code == 200
    # Logging out (canonical) revokes the login: both tokens stop working.
    assert client.post("/api/v1/auth/logout", json={}, headers=new).status_code == 200
    assert client.get(f"{BASE}/tasks", headers=new).status_code == 401


def test_register_then_the_email_is_taken(client, app):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    body = {"email": _email(), "password": PASSWORD, "tenant_name": "Acme"}
    first = client.post(f"{BASE}/auth/register", json=body)
    assert first.status_code == 201
    assert first.get_json()["role"] == "admin" and first.get_json()["full_name"] is None
    again = client.post(f"{BASE}/auth/register", json=body)
    assert again.status_code == 409
    _detail_shape(again.get_json(), "CONFLICT")
    no_tenant = client.post(f"{BASE}/auth/register", json={"email": _email(), "password": PASSWORD})
    assert no_tenant.status_code == 422


def test_rate_limit_headers_and_429_in_the_documents_shape(app, client, admin):
    app.config["BATON_USER_RATE_LIMIT"] = "3/minute"
    answers = [client.get(f"{BASE}/tasks", headers=admin["headers"]) for _ in range(4)]
    assert [a.status_code for a in answers][-1] == 429
    assert {"X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(
        answers[0].headers.keys()
    )
    body = answers[-1].get_json()
    retry = int(answers[-1].headers["Retry-After"])
    assert body["retry_after"] == retry > 0
    assert body["detail"] == f"Rate limit exceeded. Try again in {retry} seconds."
    _detail_shape(body, "RATE_LIMIT_EXCEEDED")


def test_webhook_secret_is_shown_only_when_baton_made_it(client, admin):
    url = "http://127.0.0.1:9/hooks"
    given = client.post(
        f"{BASE}/webhooks",
        json={"url": url, "event_types": ["agent.completed"], "secret": "my_secret_key"},
        headers=admin["headers"],
    )
    assert given.status_code == 201 and "secret" not in given.get_json()
    made = client.post(
        f"{BASE}/webhooks", json={"url": url, "event_types": ["*"]}, headers=admin["headers"]
    )
    assert made.status_code == 201 and made.get_json()["secret"].startswith("whsec_")
    listed = client.get("/api/v1/webhooks", headers=admin["headers"]).get_json()
    assert listed["total"] == 2  # the same subscriptions on the canonical API


def test_the_document_websocket_is_served_under_the_base(sessions):
    from api.streams.app import create_stream_app

    app = create_stream_app({"TESTING": True, "SESSION_FACTORY": sessions})
    endpoints = {rule.rule: rule.endpoint for rule in app.url_map.iter_rules()}
    assert endpoints[f"{BASE}/ws"] == "__flask_sock.task_assistant_ws"
    assert endpoints["/api/v1/ws"] == "__flask_sock.multiplexed_socket"


@pytest.mark.usefixtures("workers")
def test_the_documents_websocket_chat_and_agent_execute(live_client):
    """The document's WebSocket under the base: ``auth``, then ``chat`` and
    ``agent_execute`` frames, on the stream process (gunicorn, gevent)."""
    import websocket

    from tests.test_streams_e2e import StreamServer, collect_until_end

    client = live_client
    client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    email = _email()
    body = {"email": email, "password": PASSWORD, "tenant_name": "Acme"}
    assert client.post(f"{BASE}/auth/register", json=body).status_code == 201
    login = client.post(f"{BASE}/auth/login", json={"email": email, "password": PASSWORD})
    token = login.get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}
    conversation_id = client.post(
        f"{BASE}/chat/conversations", json={"title": "WS", **SIM}, headers=headers
    ).get_json()["id"]
    agent_id = client.post(
        f"{BASE}/agents", json={"name": "Sales Analyst", **SIM}, headers=headers
    ).get_json()["id"]

    server = StreamServer(log_name="task-assistant-stream.log").start()
    try:
        ws = websocket.create_connection(
            server.url.replace("http", "ws") + f"{BASE}/ws", timeout=60
        )
        ws.send(json.dumps({"type": "auth", "token": token}))
        assert json.loads(ws.recv())["type"] == "authenticated"
        ws.send(json.dumps({"type": "chat", "conversation_id": conversation_id,
                            "message": "Hello, how can I help?"}))  # fmt: skip
        frames = []
        while not frames or frames[-1].get("event") not in ("done", "pending"):
            frames.append(json.loads(ws.recv()))
        assert frames[0]["type"] == "chat" and frames[0]["event"] == "start"
        assert frames[-1]["event"] == "done" and frames[-1]["tokens_used"] > 0
        ws.send(json.dumps({"type": "agent_execute", "agent_id": agent_id,
                            "input": "Analyze sales data"}))  # fmt: skip
        started = json.loads(ws.recv())
        assert started["type"] == "agent_execution_started"
        end = [f for f in collect_until_end(ws, {started["job_id"]}) if f["type"] == "end"][0]
        assert end["job"]["status"] == "completed"
        ws.close()
    finally:
        server.stop()
