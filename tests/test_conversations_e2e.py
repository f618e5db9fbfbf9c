"""Conversations (issue 11): seeds 001 and 002 end to end on real workers and ``sim``."""

from __future__ import annotations

import json
import threading
import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import ConversationMessage, Job, Organization, UsageRecord
from models.db import session_factory, transaction
from tests import factories
from tests.helpers import live_tenant

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def agent_on(database_url, org_id, model: str = "sim/echo", **fields) -> uuid.UUID:
    with transaction(session_factory(database_url)) as s:
        org = s.get(Organization, org_id)
        return factories.agent(
            s,
            org,
            config={
                "providers": ["sim"],
                "model_preferences": {"default": model},
                "system_prompt": "You are the sales analyst.",
                "max_retries": 0,
                "timeout_seconds": 20,
            },
            **fields,
        ).id


def chat(live_client, tenant, agent_id=None, **body):
    response = live_client.post(
        "/api/v1/chat/conversations",
        json={"agent_id": str(agent_id or tenant["agent_id"]), **body},
        headers=tenant["headers"],
    )
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def ledger_of(database_url, job_id) -> list[UsageRecord]:
    with transaction(session_factory(database_url)) as s:
        return list(s.scalars(sa.select(UsageRecord).where(UsageRecord.job_id == job_id)))


def wait_replies(database_url, conversation_id, count, timeout=120.0) -> list[ConversationMessage]:
    """The conversation's assistant messages once ``count`` of them are finished."""
    deadline = time.monotonic() + timeout
    while True:
        with transaction(session_factory(database_url)) as s:
            rows = list(
                s.scalars(
                    sa.select(ConversationMessage)
                    .where(
                        ConversationMessage.conversation_id == uuid.UUID(str(conversation_id)),
                        ConversationMessage.role == "assistant",
                    )
                    .order_by(ConversationMessage.seq)
                )
            )
        done = [r for r in rows if r.status in ("completed", "failed")]
        if len(done) >= count or time.monotonic() > deadline:
            assert len(done) >= count, [(r.status, r.error) for r in rows]
            return rows
        time.sleep(0.1)


def sse_events(response) -> list[dict]:
    text = b"".join(response.response).decode()
    return [json.loads(line[6:]) for line in text.splitlines() if line.startswith("data: ")]


# -- seed 002 -----------------------------------------------------------------------------


def test_seed_002_message_waits_for_the_reply_with_tokens_and_cost(
    live_client, tenant, database_url
):
    agent_id = agent_on(database_url, tenant["org_id"])
    conversation = chat(live_client, tenant, agent_id, title="Sales Q&A", metadata={"d": "s"})
    assert conversation["title"] == "Sales Q&A" and conversation["metadata"] == {"d": "s"}
    url = f"/api/v1/chat/conversations/{conversation['id']}"
    response = live_client.post(
        f"{url}/messages",
        json={"message": "What are the key trends in our Q4 sales?", "temperature": 0.2},
        headers=tenant["headers"],
    )
    assert response.status_code == 200, response.get_json()
    reply = response.get_json()
    assert reply["role"] == "assistant" and reply["status"] == "completed"
    assert reply["conversation_id"] == conversation["id"]
    assert "key trends in our Q4 sales" in reply["content"]
    rows = ledger_of(database_url, uuid.UUID(reply["job_id"]))
    assert len(rows) == 1
    assert Decimal(reply["cost"]) == rows[0].cost > 0
    assert reply["tokens_used"] == rows[0].prompt_tokens + rows[0].completion_tokens
    with transaction(session_factory(database_url)) as s:
        job = s.get(Job, uuid.UUID(reply["job_id"]))
        assert job.kind == "chat" and job.input["reply_message_id"] == reply["id"]
        assert job.settings["temperature"] == 0.2

    # A second message: the prompt carries the history (the agent's instructions, the
    # first exchange, the new question).
    second = live_client.post(
        f"{url}/messages", json={"message": "And in Q3?"}, headers=tenant["headers"]
    ).get_json()
    assert second["status"] == "completed" and "And in Q3?" in second["content"]
    assert (
        ledger_of(database_url, uuid.UUID(second["job_id"]))[0].prompt_tokens
        > rows[0].prompt_tokens
    )

    listed = live_client.get("/api/v1/chat/conversations", headers=tenant["headers"]).get_json()
    assert conversation["id"] in [c["id"] for c in listed["items"]]
    got = live_client.get(url, headers=tenant["headers"]).get_json()
    assert [m["role"] for m in got["messages"]] == ["user", "assistant", "user", "assistant"]
    assert got["message_count"] == 4 and got["has_more"] is False


def test_seed_002_streamed_tokens_are_the_stored_reply_and_done_is_the_ledger(
    live_client, tenant, database_url
):
    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    response = live_client.post(
        f"/api/v1/chat/conversations/{conversation['id']}/messages",
        json={"message": "Explain the sales trends in detail", "stream": True},
        headers=tenant["headers"],
    )
    assert response.status_code == 200
    assert response.mimetype == "text/event-stream"
    events = sse_events(response)
    assert events[0]["type"] == "start" and events[-1]["type"] == "done", events
    tokens = [e["content"] for e in events if e["type"] == "token"]
    assert len(tokens) > 1  # token by token, not one lump
    done = events[-1]
    with transaction(session_factory(database_url)) as s:
        reply = s.get(ConversationMessage, uuid.UUID(events[0]["message_id"]))
        job_id = reply.job_id
    assert "".join(tokens) == reply.content and reply.status == "completed"
    rows = ledger_of(database_url, job_id)
    assert Decimal(done["cost"]) == sum(r.cost for r in rows) == reply.cost > 0
    assert done["tokens_used"] == sum(r.prompt_tokens + r.completion_tokens for r in rows)


def test_a_client_gone_mid_stream_still_gets_its_reply_stored(live_client, tenant, database_url):
    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    response = live_client.post(
        f"/api/v1/chat/conversations/{conversation['id']}/messages",
        json={"message": "Stream this and I will hang up", "stream": True},
        headers=tenant["headers"],
    )
    body = iter(response.response)
    first = json.loads(next(body).decode()[6:])
    assert first["type"] == "start"
    response.close()  # the client hangs up after the first event
    (reply,) = wait_replies(database_url, conversation["id"], 1)
    assert reply.status == "completed" and "hang up" in reply.content
    assert reply.cost == sum(r.cost for r in ledger_of(database_url, reply.job_id)) > 0


def test_a_provider_failure_mid_reply_keeps_the_partial_text_and_its_charge(
    live_client, tenant, database_url
):
    agent_id = agent_on(database_url, tenant["org_id"], "sim/cut-stream")
    conversation = chat(live_client, tenant, agent_id)
    url = f"/api/v1/chat/conversations/{conversation['id']}/messages"
    failed = live_client.post(url, json={"message": "cut me off"}, headers=tenant["headers"])
    assert failed.status_code == 200
    body = failed.get_json()
    assert body["status"] == "failed" and body["error"]
    rows = ledger_of(database_url, uuid.UUID(body["job_id"]))
    assert rows and Decimal(body["cost"]) == sum(r.cost for r in rows) > 0
    assert body["content"] and "Simulated answer".startswith(body["content"][:16])
    # The conversation stays usable: the agent now answers on a healthy model.
    with transaction(session_factory(database_url)) as s:
        from models import Agent

        agent = s.get(Agent, agent_id)
        agent.config = {**agent.config, "model_preferences": {"default": "sim/echo"}}
    again = live_client.post(url, json={"message": "try again"}, headers=tenant["headers"])
    assert again.get_json()["status"] == "completed"


def test_bad_messages_and_foreign_conversations(live_client, tenant, database_url):
    other = live_tenant(live_client.application, database_url)
    conversation = chat(live_client, tenant)
    url = f"/api/v1/chat/conversations/{conversation['id']}/messages"
    h = tenant["headers"]
    empty = live_client.post(url, json={"message": "   "}, headers=h)
    assert (
        empty.status_code == 422 and empty.get_json()["error"]["details"][0]["field"] == "message"
    )
    huge = live_client.post(url, json={"message": "x" * 40_000}, headers=h)
    assert huge.status_code == 422
    assert (
        live_client.post(url, json={"message": "hi"}, headers=other["headers"]).status_code == 404
    )
    assert (
        live_client.get(
            f"/api/v1/chat/conversations/{conversation['id']}", headers=other["headers"]
        ).status_code
        == 404
    )
    assert (
        live_client.post(
            "/api/v1/chat/conversations", json={"agent_id": str(other["agent_id"])}, headers=h
        ).status_code
        == 404
    )
    # A deleted agent: its conversation is readable but takes no message.
    agent_id = agent_on(database_url, tenant["org_id"])
    orphan = chat(live_client, tenant, agent_id)
    assert live_client.delete(f"/api/v1/agents/{agent_id}", headers=h).status_code == 204
    gone = live_client.post(
        f"/api/v1/chat/conversations/{orphan['id']}/messages", json={"message": "hi"}, headers=h
    )
    assert gone.status_code == 404 and gone.get_json()["error"]["code"] == "RESOURCE_NOT_FOUND"


def test_a_spent_budget_refuses_the_message_before_any_call(live_client, tenant, database_url):
    conversation = chat(live_client, tenant, agent_on(database_url, tenant["org_id"]))
    url = f"/api/v1/chat/conversations/{conversation['id']}/messages"
    first = live_client.post(url, json={"message": "one"}, headers=tenant["headers"]).get_json()
    assert first["status"] == "completed"
    with transaction(session_factory(database_url)) as s:
        org = s.get(Organization, tenant["org_id"])
        factories.budget_limit(s, org, amount_usd=first["cost"], action_on_exceed="block")
        messages_before = s.scalar(sa.select(sa.func.count()).select_from(ConversationMessage))
    refused = live_client.post(url, json={"message": "two"}, headers=tenant["headers"])
    assert refused.status_code == 402
    assert refused.get_json()["error"]["code"] == "BUDGET_EXCEEDED"
    with transaction(session_factory(database_url)) as s:
        assert (
            s.scalar(sa.select(sa.func.count()).select_from(ConversationMessage)) == messages_before
        )


def test_messages_sent_at_once_are_answered_in_order_one_at_a_time(
    live_client, tenant, database_url
):
    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    url = f"/api/v1/chat/conversations/{conversation['id']}/messages"
    app = live_client.application
    results: dict[int, int] = {}

    def send(n: int) -> None:
        with app.test_client() as c:
            response = c.post(
                url, json={"message": f"question {n}", "wait_seconds": 0}, headers=tenant["headers"]
            )
            results[n] = response.status_code

    threads = [threading.Thread(target=send, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(results.values()) and all(code in (200, 202) for code in results.values())
    replies = wait_replies(database_url, conversation["id"], 4, timeout=180)
    with transaction(session_factory(database_url)) as s:
        questions = {
            m.id: m.content
            for m in s.scalars(
                sa.select(ConversationMessage).where(
                    ConversationMessage.conversation_id == uuid.UUID(conversation["id"]),
                    ConversationMessage.role == "user",
                )
            )
        }
        jobs = {
            j.id: j
            for j in s.scalars(sa.select(Job).where(Job.id.in_([r.job_id for r in replies])))
        }
    for reply in replies:
        assert reply.status == "completed"
        assert questions[reply.reply_to_id] in reply.content  # each answers its own question
    # One at a time, in the order the messages were stored: each reply's job started
    # after the previous reply was written.
    ordered = sorted(replies, key=lambda r: r.seq)
    for before, after in zip(ordered, ordered[1:], strict=False):
        assert jobs[after.job_id].started_at >= before.completed_at


# -- seed 001 -----------------------------------------------------------------------------


def test_seed_001_pause_resume_cursor_pages_and_stats(live_client, tenant, database_url):
    h = tenant["headers"]
    base = f"/api/v1/projects/{tenant['project_id']}"
    agent_id = agent_on(database_url, tenant["org_id"])
    created = live_client.post(
        f"{base}/conversations",
        json={"title": "Issue #1", "type": "issue", "agent_ids": [str(agent_id)]},
        headers=h,
    )
    assert created.status_code == 201, created.get_json()
    conversation = created.get_json()
    assert conversation["status"] == "active" and conversation["agents"][0]["id"] == str(agent_id)
    url = f"{base}/conversations/{conversation['id']}"
    project = live_client.get(base, headers=h).get_json()
    assert project["stats"]["active_conversations"] == 1

    assert live_client.post(f"{url}/pause", headers=h).get_json()["status"] == "paused"
    for n in range(3):
        posted = live_client.post(f"{url}/messages", json={"content": f"paused {n}"}, headers=h)
        assert posted.status_code == 201, posted.get_json()
        assert posted.get_json()["reply"]["status"] == "queued"
    time.sleep(1.0)
    with transaction(session_factory(database_url)) as s:
        started = s.scalar(
            sa.select(sa.func.count())
            .select_from(ConversationMessage)
            .where(
                ConversationMessage.conversation_id == uuid.UUID(conversation["id"]),
                ConversationMessage.job_id.is_not(None),
            )
        )
    assert started == 0  # paused: no reply started
    assert live_client.post(f"{url}/resume", headers=h).get_json()["status"] == "active"
    replies = wait_replies(database_url, conversation["id"], 3)
    assert [r.status for r in replies] == ["completed"] * 3
    for n, reply in enumerate(sorted(replies, key=lambda r: r.seq)):
        assert f"paused {n}" in reply.content

    # Pages by cursor: newest page first, each page oldest first, every message once.
    seen: list[str] = []
    before = None
    while True:
        args = {"limit": 2, **({"before": before} if before else {})}
        page = live_client.get(url, query_string=args, headers=h).get_json()
        seen = [m["id"] for m in page["messages"]] + seen
        if not page["has_more"]:
            break
        before = page["messages"][0]["id"]
    assert len(seen) == len(set(seen)) == 6
    full = live_client.get(url, query_string={"limit": 100}, headers=h).get_json()
    assert [m["id"] for m in full["messages"]] == seen
    agent_message = full["messages"][1]
    assert agent_message["author_type"] == "agent" and agent_message["agent"]["id"] == str(agent_id)
    assert agent_message["tokens_in"] > 0 and Decimal(agent_message["cost_usd"]) > 0

    # The replies are in the reports per agent and per project (and in their spend).
    cost = sum(Decimal(m["cost"]) for m in full["messages"])
    agents = live_client.get("/api/v1/analytics/agents", headers=h).get_json()["agents"]
    metrics = next(a["metrics"] for a in agents if a["id"] == str(agent_id))
    assert metrics["conversations"] == 1 and metrics["conversation_messages"] == 3
    assert Decimal(metrics["conversation_cost"]) == cost == Decimal(metrics["total_cost"])
    by_agent = live_client.get("/api/v1/budget/by-agent", headers=h).get_json()["items"]
    row = next(r for r in by_agent if r["agent_id"] == str(agent_id))
    assert row["conversation_messages"] == 3 and Decimal(row["conversation_cost"]) == cost
    by_project = live_client.get("/api/v1/budget/by-project", headers=h).get_json()["items"]
    row = next(r for r in by_project if r["project_id"] == str(tenant["project_id"]))
    assert row["conversations"] == 1 and Decimal(row["spent"]) >= cost

    listed = live_client.get(f"{base}/conversations", query_string={"type": "issue"}, headers=h)
    assert [c["id"] for c in listed.get_json()["items"]] == [conversation["id"]]

    # Reset: the agent's conversations end; a new message is refused.
    with transaction(session_factory(database_url)) as s:
        from models import Agent

        s.get(Agent, agent_id).project_id = tenant["project_id"]
    reset = live_client.post(f"{base}/agents/{agent_id}/reset", headers=h)
    assert reset.status_code == 200 and reset.get_json()["conversations_ended"] == 1
    assert live_client.get(url, headers=h).get_json()["status"] == "completed"
    assert live_client.post(f"{url}/messages", json={"content": "x"}, headers=h).status_code == 409
    assert live_client.get(base, headers=h).get_json()["stats"]["active_conversations"] == 0


# -- live: seed 002's WebSocket ``chat`` frame, seed 001's Socket.IO ------------------------


@pytest.fixture(scope="module")
def stream_server(database_url):
    from tests.test_streams_e2e import StreamServer

    server = StreamServer().start()
    yield server
    server.stop()


def bearer(tenant) -> str:
    return tenant["headers"]["Authorization"].split(" ", 1)[1]


def test_websocket_chat_frame_streams_the_reply(stream_server, live_client, tenant, database_url):
    import websocket

    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    ws = websocket.create_connection(
        stream_server.url.replace("http", "ws") + "/api/v1/ws", timeout=60
    )
    try:
        ws.send(json.dumps({"type": "auth", "token": bearer(tenant)}))
        assert json.loads(ws.recv())["type"] == "authenticated"
        ws.send(json.dumps({"type": "chat", "conversation_id": conversation["id"], "message": ""}))
        assert json.loads(ws.recv())["code"] == "VALIDATION_ERROR"  # an empty message
        ws.send(
            json.dumps(
                {"type": "chat", "conversation_id": conversation["id"], "message": "Hello there"}
            )
        )
        frames = []
        while not frames or frames[-1].get("event") not in ("done", "pending"):
            frames.append(json.loads(ws.recv()))
    finally:
        ws.close()
    assert all(f["type"] == "chat" for f in frames)
    assert frames[0]["event"] == "start" and frames[-1]["event"] == "done", frames
    tokens = [f["content"] for f in frames if f["event"] == "token"]
    with transaction(session_factory(database_url)) as s:
        reply = s.get(ConversationMessage, uuid.UUID(frames[0]["message_id"]))
        assert "".join(tokens) == reply.content and len(tokens) > 1
        assert Decimal(frames[-1]["cost"]) == reply.cost > 0


def test_socketio_conversation_room_carries_messages_tokens_and_typing(
    stream_server, live_client, tenant, database_url
):
    import socketio

    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    stranger = live_tenant(live_client.application, database_url)
    received: list[tuple[str, dict]] = []

    def connect(token, into):
        client = socketio.Client(reconnection=False)
        for event in ("message", "agent_typing", "agent_status", "typing", "error"):
            client.on(event, lambda data, event=event: into.append((event, data)))
        client.connect(
            stream_server.url, auth={"token": token}, transports=["websocket"], wait_timeout=20
        )
        return client

    mine = connect(bearer(tenant), received)
    theirs_events: list[tuple[str, dict]] = []
    theirs = connect(bearer(stranger), theirs_events)
    try:
        mine.emit("join_conversation", {"conversation_id": conversation["id"]})
        theirs.emit("join_conversation", {"conversation_id": conversation["id"]})
        time.sleep(0.5)
        mine.emit("send_message", {"conversation_id": conversation["id"], "content": "Hi socket"})
        # The client runs each event's handler on a thread of its own (python-engineio's
        # run_async), so events sent together may be appended out of order: wait for the
        # last ones (the completed reply and typing off) and order deltas by their index.
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            done = [
                d for k, d in received
                if k == "message" and d.get("role") == "assistant" and d.get("status") == "completed"
            ]  # fmt: skip
            typing = [d["is_typing"] for k, d in received if k == "agent_typing"]
            if done and False in typing:
                break
            time.sleep(0.1)
        assert done, received
        user = [d for k, d in received if k == "message" and d.get("role") == "user"]
        assert user and user[0]["content"] == "Hi socket"
        streamed = sorted(
            (d for k, d in received if k == "message" and d.get("status") == "streaming"),
            key=lambda d: (d["attempt"], d["index"]),
        )
        assert len(streamed) > 1 and "".join(d["delta"] for d in streamed) == done[0]["content"]
        # Typing went on when the reply was queued, long before it went off.
        assert typing[0] is True and False in typing, typing
        assert any(k == "agent_status" for k, _ in received)
        # Another organization cannot join the room: an error, and nothing of this chat.
        assert any(k == "error" and d["code"] == "RESOURCE_NOT_FOUND" for k, d in theirs_events)
        assert not [k for k, _ in theirs_events if k == "message"]
        # Seed 001: at most 100 client events a minute per connection.
        for _ in range(100):
            theirs.emit("typing", {"conversation_id": conversation["id"], "is_typing": True})
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not any(
            k == "error" and d["code"] == "RATE_LIMIT_EXCEEDED" for k, d in theirs_events
        ):
            time.sleep(0.1)
        assert any(k == "error" and d["code"] == "RATE_LIMIT_EXCEEDED" for k, d in theirs_events)
    finally:
        mine.disconnect()
        theirs.disconnect()


def test_a_cancelled_reply_fails_and_the_conversation_goes_on(live_client, tenant, database_url):
    agent_id = agent_on(database_url, tenant["org_id"], "sim/slow-stream")
    conversation = chat(live_client, tenant, agent_id)
    url = f"/api/v1/chat/conversations/{conversation['id']}/messages"
    h = tenant["headers"]
    first = live_client.post(url, json={"message": "one", "wait_seconds": 0}, headers=h)
    assert first.status_code == 202
    job_id = first.get_json()["job_id"]
    assert live_client.post(f"/api/v1/jobs/{job_id}/cancel", headers=h).status_code == 200
    second = live_client.post(url, json={"message": "two", "wait_seconds": 60}, headers=h)
    assert second.status_code == 200 and second.get_json()["status"] == "completed"
    assert "two" in second.get_json()["content"]
    replies = wait_replies(database_url, conversation["id"], 2)
    assert replies[0].status == "failed" and "CANCELLED" in replies[0].error
