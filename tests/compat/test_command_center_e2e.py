"""Seed 001 end to end through its dialect, on real workers and the ``sim`` provider:
log in, create a project and an agent, converse until the reply is written, read the
conversation, the spend and the same rows in the canonical API."""

from __future__ import annotations

import time
import uuid

import pytest

from api.compat.command_center import DIALECT
from models.db import session_factory, transaction
from tests import factories

pytestmark = pytest.mark.usefixtures("workers")
BASE = DIALECT.base


@pytest.fixture
def credentials(database_url):
    with transaction(session_factory(database_url)) as session:
        org = factories.organization(session)
        user = factories.user(session, org, role="admin")
        return {"username": user.username, "org_id": org.id}


def wait_reply(client, url, headers, timeout=120.0) -> dict:
    """The conversation once its agent's last reply is finished."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(url, headers=headers).get_json()
        replies = [m for m in body["messages"] if m["author_type"] == "agent"]
        if replies and replies[-1]["status"] in ("completed", "failed"):
            return body
        assert time.monotonic() < deadline, body
        time.sleep(0.1)


def test_log_in_create_converse_and_read_the_results(live_client, credentials):
    client = live_client
    login = client.post(
        f"{BASE}/auth/login",
        json={"username": credentials["username"], "password": factories.DEFAULT_PASSWORD},
    )
    assert login.status_code == 200, login.get_json()
    assert login.get_json()["requires_2fa"] is False
    h = {"Authorization": f"Bearer {login.get_json()['access_token']}"}

    project = client.post(
        f"{BASE}/projects", json={"name": "Command center", "github_repo": "acme/cc"}, headers=h
    ).get_json()
    agent = client.post(
        f"{BASE}/projects/{project['id']}/agents",
        json={
            "name": "Senior Architect",
            "type": "architect",
            "model_config": {"model": "sim/echo", "temperature": 0.2, "max_tokens": 4096},
            "system_prompt": "You are the architect.",
        },
        headers=h,
    )
    assert agent.status_code == 201, agent.get_json()
    agent = agent.get_json()
    conversation = client.post(
        f"{BASE}/projects/{project['id']}/conversations",
        json={"title": "Plan", "type": "general", "agent_ids": [agent["id"]]},
        headers=h,
    ).get_json()
    url = f"{BASE}/projects/{project['id']}/conversations/{conversation['id']}"

    posted = client.post(f"{url}/messages", json={"content": "Hello agents"}, headers=h)
    assert posted.status_code == 201, posted.get_json()
    message = posted.get_json()
    assert message["author_type"] == "user" and message["content"] == "Hello agents"

    done = wait_reply(client, url, h)
    reply = done["messages"][-1]
    assert reply["status"] == "completed", reply
    assert reply["author_type"] == "agent" and reply["agent"]["id"] == agent["id"]
    assert reply["reply_to"] == message["id"] and "Hello agents" in reply["content"]
    assert reply["tokens_in"] > 0 and reply["tokens_out"] > 0
    assert isinstance(reply["cost_usd"], float) and reply["cost_usd"] > 0
    assert done["has_more"] is False and [m["id"] for m in done["messages"]][0] == message["id"]

    # The spend is counted once, in the dialect's numbers and the canonical strings.
    stats = client.get(f"{BASE}/projects/{project['id']}", headers=h).get_json()["stats"]
    assert stats["today_cost"] > 0 and stats["active_conversations"] == 1
    analytics = client.get(f"{BASE}/analytics/agents", headers=h).get_json()["agents"]
    mine = next(a for a in analytics if a["id"] == agent["id"])
    assert mine["metrics"]["total_messages"] == 1
    assert mine["metrics"]["total_cost"] == pytest.approx(reply["cost_usd"])
    by_agent = client.get(f"{BASE}/budget/by-agent", headers=h).get_json()
    assert by_agent["total_spent"] == pytest.approx(reply["cost_usd"])
    summary = client.get(f"{BASE}/budget/summary", headers=h).get_json()
    assert summary["today"]["spent"] == pytest.approx(reply["cost_usd"])

    canonical = client.get(
        f"/api/v1/projects/{project['id']}/conversations/{conversation['id']}", headers=h
    ).get_json()
    assert [m["id"] for m in canonical["messages"]] == [m["id"] for m in done["messages"]]
    assert float(canonical["messages"][-1]["cost_usd"]) == pytest.approx(reply["cost_usd"])
    job = client.get(f"/api/v1/jobs/{canonical['messages'][-1]['job_id']}", headers=h).get_json()
    assert job["kind"] == "chat" and job["status"] == "completed"

    # Pause: a message waits; resume: it is answered.
    assert client.post(f"{url}/pause", headers=h).get_json()["status"] == "paused"
    client.post(f"{url}/messages", json={"content": "After the pause"}, headers=h)
    assert client.post(f"{url}/resume", headers=h).get_json()["status"] == "active"
    again = wait_reply(client, url, h)
    assert "After the pause" in again["messages"][-1]["content"]
    assert len(again["messages"]) == 4


@pytest.fixture(scope="module")
def stream_server(database_url):
    from tests.test_streams_e2e import StreamServer

    server = StreamServer().start()
    yield server
    server.stop()


def test_the_dialects_token_streams_the_reply_over_socketio(
    stream_server, live_client, credentials
):
    """The document's Socket.IO at /socket.io: a dialect login joins the conversation
    and sees the message sent through the dialect's REST and the agent's reply."""
    import socketio

    client = live_client
    token = client.post(
        f"{BASE}/auth/login",
        json={"username": credentials["username"], "password": factories.DEFAULT_PASSWORD},
    ).get_json()["access_token"]
    h = {"Authorization": f"Bearer {token}"}
    project = client.post(f"{BASE}/projects", json={"name": "Live"}, headers=h).get_json()
    agent = client.post(
        f"{BASE}/projects/{project['id']}/agents",
        json={"name": "Coder", "type": "coder", "model_config": {"model": "sim/slow-stream"}},
        headers=h,
    ).get_json()
    conversation = client.post(
        f"{BASE}/projects/{project['id']}/conversations",
        json={"agent_ids": [agent["id"]]},
        headers=h,
    ).get_json()
    received: list[tuple[str, dict]] = []
    sio = socketio.Client(reconnection=False)
    for event in ("message", "agent_typing", "error"):
        sio.on(event, lambda data, event=event: received.append((event, data)))
    sio.connect(stream_server.url, auth={"token": token}, transports=["websocket"], wait_timeout=20)
    try:
        sio.emit("join_conversation", {"conversation_id": conversation["id"]})
        time.sleep(0.5)
        url = f"{BASE}/projects/{project['id']}/conversations/{conversation['id']}/messages"
        assert client.post(url, json={"content": "Stream it"}, headers=h).status_code == 201
        deadline = time.monotonic() + 90
        done: list[dict] = []
        while time.monotonic() < deadline and not done:
            done = [
                d for k, d in received
                if k == "message" and d.get("author_type") == "agent"
                and d.get("status") == "completed"
            ]  # fmt: skip
            time.sleep(0.1)
        assert done, received
        # The document's "same as REST message object": nested ``agent`` and a number
        # ``cost_usd``, alongside Baton's ``agent_id`` and decimal-string ``cost``
        # (docs/dialects-command-center.md); the reply's tokens name the agent the same way.
        reply = done[0]
        assert "Stream it" in reply["content"] and reply["agent_id"] == agent["id"]
        assert reply["agent"] == {"id": agent["id"], "name": "Coder", "type": "coder"}
        assert isinstance(reply["cost_usd"], float) and reply["cost_usd"] > 0
        assert reply["cost_usd"] == pytest.approx(float(reply["cost"]))
        assert reply["tokens_in"] > 0 and reply["tokens_out"] > 0
        sent = [d for k, d in received if k == "message" and d.get("author_type") == "user"]
        assert sent and sent[0]["agent"] is None and sent[0]["cost_usd"] == 0
        tokens = [d for k, d in received if k == "message" and d.get("status") == "streaming"]
        assert tokens and tokens[0]["agent"]["id"] == agent["id"]
        assert not [d for k, d in received if k == "error"]
        # Bad input over the socket: the document's error event, details an object.
        sio.emit("join_conversation", {"conversation_id": "nope"})
        sio.emit("join_conversation", {"conversation_id": str(uuid.uuid4())})
        deadline = time.monotonic() + 10
        errors: list[dict] = []
        while time.monotonic() < deadline and len(errors) < 2:
            errors = [d for k, d in received if k == "error"]
            time.sleep(0.05)
        # Each event's handler runs on a thread of its own: the two may arrive either way.
        by_code = {e["code"]: e for e in errors}
        assert sorted(by_code) == ["RESOURCE_NOT_FOUND", "VALIDATION_ERROR"], errors
        assert all(set(e) == {"code", "message", "details"} for e in errors), errors
        assert by_code["VALIDATION_ERROR"]["details"] == {"conversation_id": ["Not a valid UUID."]}
        assert isinstance(by_code["RESOURCE_NOT_FOUND"]["details"], dict)
        # Typing: the section's heading says typing_indicator, its example typing; the
        # others in the room hear either as typing.
        other = socketio.Client(reconnection=False)
        typing: list[dict] = []
        other.on("typing", typing.append)
        other.connect(stream_server.url, auth={"token": token}, transports=["websocket"],
                      wait_timeout=20)  # fmt: skip
        try:
            other.emit("join_conversation", {"conversation_id": conversation["id"]})
            time.sleep(0.5)
            sio.emit("typing_indicator", {"conversation_id": conversation["id"], "is_typing": True})
            sio.emit("typing", {"conversation_id": conversation["id"], "is_typing": False})
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and len(typing) < 2:
                time.sleep(0.05)
            # Handlers run on threads of their own: the two may be appended either way.
            assert sorted(t["is_typing"] for t in typing) == [False, True], typing
            assert {t["conversation_id"] for t in typing} == {conversation["id"]}
        finally:
            other.disconnect()
    finally:
        sio.disconnect()
