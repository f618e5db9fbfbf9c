"""Conversations in process (issue 11): the prompt's history budget, the search tool's
message source, the ``conversation.message`` webhook. End to end: test_conversations_e2e."""

from __future__ import annotations

import uuid

import sqlalchemy as sa

from models import ConversationMessage, Job, WebhookDelivery, WebhookSubscription
from orchestration import conversations
from orchestration.principal import Principal
from orchestration.search import search_outputs
from tests import factories


def _setup(db, sessions):
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    agent = factories.agent(db, org)
    db.flush()
    principal = Principal(user.id, org.id, "admin")
    view = conversations.create_conversation(
        sessions, principal=principal, agent_id=agent.id, title="Chat", metadata={}
    )
    return org, principal, view.conversation


def test_a_paused_conversation_stores_messages_and_their_webhook_but_starts_no_reply(db, sessions):
    org, principal, conversation = _setup(db, sessions)
    db.add(
        WebhookSubscription(
            organization_id=org.id, url="https://hooks.example.com/x",
            event_types=["conversation.message"], encrypted_secret="x",
        )
    )  # fmt: skip
    db.flush()
    conversations.set_paused(
        sessions, principal=principal, conversation_id=conversation.id, paused=True
    )
    posted = conversations.post_message(
        sessions, principal=principal, conversation_id=conversation.id, content="Hello"
    )
    assert posted.reply.status == "queued" and posted.reply.job_id is None
    assert (
        db.scalar(sa.select(sa.func.count()).select_from(Job).where(Job.organization_id == org.id))
        == 0
    )
    events = list(
        db.scalars(
            sa.select(WebhookDelivery.payload).where(
                WebhookDelivery.organization_id == org.id,
                WebhookDelivery.event_type == "conversation.message",
            )
        )
    )
    assert len(events) == 1 and events[0]["data"]["content"] == "Hello"
    assert events[0]["data"]["conversation_id"] == str(conversation.id)


def _message(db, conversation, seq, role, content):
    row = ConversationMessage(
        id=uuid.uuid4(), conversation_id=conversation.id,
        organization_id=conversation.organization_id, seq=seq, role=role, content=content,
        status="completed", tokens_in=0, tokens_out=0, cost=0,
    )  # fmt: skip
    db.add(row)
    db.flush()
    return row


def test_history_keeps_the_newest_turns_within_the_token_budget(db, sessions):
    _, _, conversation = _setup(db, sessions)
    for seq in range(1, 7):
        _message(db, conversation, seq, "user" if seq % 2 else "assistant", f"turn {seq} " * 10)
    reply = _message(db, conversation, 7, "assistant", "")
    reply.status = "pending"
    job = Job(input={"reply_message_id": str(reply.id)})
    words = lambda m: len(m["content"].split())  # noqa: E731
    kept = conversations.history(db, job=job, count_tokens=words, budget_tokens=45)
    # 20 words a turn: the two newest fit in 45, the oldest are dropped; oldest first.
    assert [m["content"].split()[1] for m in kept] == ["5", "6"]
    assert [m["role"] for m in kept] == ["user", "assistant"]
    everything = conversations.history(db, job=job, count_tokens=words, budget_tokens=10_000)
    assert len(everything) == 6
    # A single turn larger than the budget is still sent (the newest is never dropped).
    assert len(conversations.history(db, job=job, count_tokens=words, budget_tokens=1)) == 1


def test_search_finds_messages_of_the_organization_only(db, sessions):
    org, _, conversation = _setup(db, sessions)
    other_org, _, theirs = _setup(db, sessions)
    word = f"wombat{uuid.uuid4().hex[:6]}"
    _message(db, conversation, 1, "user", f"where did the {word} go")
    _message(db, theirs, 1, "user", f"{word} secret of another tenant")
    job = factories.job(db, org)
    factories.step(db, job, output=f"{word} {word} in a job output", status="completed")
    hits = search_outputs(db, organization_id=org.id, query=word, limit=5)
    assert {h.source for h in hits} == {"job_output", "message"}
    assert all("another tenant" not in h.snippet for h in hits)
    message = next(h for h in hits if h.source == "message")
    assert message.conversation_id == conversation.id and message.job_title == "Chat"
    assert hits[0].rank >= hits[1].rank
    assert other_org.id != org.id


def test_seed_001_nested_agent_routes_alias_the_agent_views(client, db, app):
    org, other = factories.organization(db), factories.organization(db)
    user = factories.user(db, org, role="admin")
    project, foreign = factories.project(db, org), factories.project(db, other)
    elsewhere = factories.project(db, org)
    db.commit()
    h = factories.auth_headers(app, user)
    base = f"/api/v1/projects/{project.id}/agents"
    created = client.post(base, json={"name": "Architect", "type": "architect"}, headers=h)
    assert created.status_code == 201, created.get_json()
    agent = created.get_json()
    assert agent["project_id"] == str(project.id)
    client.post(f"/api/v1/projects/{elsewhere.id}/agents", json={"name": "Other"}, headers=h)
    listed = client.get(base, headers=h).get_json()
    assert [a["name"] for a in listed["items"]] == ["Architect"]
    patched = client.patch(f"{base}/{agent['id']}", json={"status": "paused"}, headers=h)
    assert patched.status_code == 200 and patched.get_json()["status"] == "paused"
    assert client.get(f"/api/v1/agents/{agent['id']}", headers=h).get_json()["status"] == "paused"
    wrong = client.patch(
        f"/api/v1/projects/{elsewhere.id}/agents/{agent['id']}", json={"name": "x"}, headers=h
    )
    assert wrong.status_code == 404
    assert client.get(f"/api/v1/projects/{foreign.id}/agents", headers=h).status_code == 404


def test_history_is_counted_with_the_models_own_tokenizer():
    from workers.providers.estimate import TOKENS_PER_MESSAGE, count_message_tokens

    message = {"role": "user", "content": "Hello world, how are you today?"}
    # OpenAI's o200k_base (gpt-4o) splits this sentence into 8 tokens, offline.
    assert count_message_tokens("openai", "gpt-4o", message) == 8 + TOKENS_PER_MESSAGE
    assert count_message_tokens("openai", "openai/gpt-4o", message) == 8 + TOKENS_PER_MESSAGE
    # A model without a tokenizer here falls back to the budget's estimate (3 chars/token).
    assert (
        count_message_tokens("groq", "llama-3.3-70b-versatile", message) == 11 + TOKENS_PER_MESSAGE
    )
