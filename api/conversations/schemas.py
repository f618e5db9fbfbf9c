"""Conversations and messages: seed 002 (``/chat``) and seed 001 (under a project)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.common.schemas import ListArgsSchema, Money
from models import ConversationMessage
from orchestration.conversations import ConversationView
from orchestration.listing import MAX_LIMIT

TYPES = ("issue", "general", "task", "review")
STATUSES = ("active", "paused", "completed")


class AgentRefSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String()


class ConversationMessageSchema(Schema):
    """Seed 001's message object (seed 002's ``role``, ``tokens_used`` and ``cost`` too)."""

    id = fields.UUID()
    conversation_id = fields.UUID()
    role = fields.String()
    author_type = fields.String()
    author_id = fields.UUID(allow_none=True)
    agent = fields.Nested(AgentRefSchema, allow_none=True)
    content = fields.String()
    status = fields.String()
    error = fields.String(allow_none=True)
    tokens_in = fields.Integer()
    tokens_out = fields.Integer()
    tokens_used = fields.Integer()
    cost_usd = Money()
    cost = Money()
    job_id = fields.UUID(allow_none=True)
    reply_to = fields.UUID(allow_none=True)
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)

    @pre_dump
    def _from_row(self, m: ConversationMessage, **_: Any) -> dict[str, Any]:
        agent = getattr(m, "agent", None)  # set by ``_AttachAgent``
        return {
            "id": m.id,
            "conversation_id": m.conversation_id,
            "role": m.role,
            "author_type": "agent" if m.role == "assistant" else "user",
            "author_id": m.author_id,
            "agent": (
                {"id": agent.id, "name": agent.name, "type": agent.type}
                if agent
                else ({"id": m.agent_id, "name": None, "type": None} if m.agent_id else None)
            ),
            "content": m.content,
            "status": m.status,
            "error": m.error,
            "tokens_in": m.tokens_in,
            "tokens_out": m.tokens_out,
            "tokens_used": m.tokens_in + m.tokens_out,
            "cost_usd": m.cost,
            "cost": m.cost,
            "job_id": m.job_id,
            "reply_to": m.reply_to_id,
            "created_at": m.created_at,
            "completed_at": m.completed_at,
        }


class ConversationSchema(Schema):
    id = fields.UUID()
    project_id = fields.UUID(allow_none=True)
    agent_id = fields.UUID(allow_none=True)
    title = fields.String()
    type = fields.String()
    status = fields.String()
    metadata = fields.Dict()
    issue_id = fields.UUID(allow_none=True)
    agents = fields.List(fields.Nested(AgentRefSchema))
    message_count = fields.Integer()
    messages = fields.List(fields.Nested(ConversationMessageSchema))
    has_more = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: ConversationView, **_: Any) -> dict[str, Any]:
        c = view.conversation
        by_id = {a.id: a for a in view.agents}
        return {
            "id": c.id,
            "project_id": c.project_id,
            "agent_id": c.agent_id,
            "title": c.title,
            "type": c.type,
            "status": c.status,
            "metadata": c.meta or {},
            "issue_id": c.issue_id,
            "agents": view.agents,
            "message_count": view.message_count,
            "messages": [_AttachAgent(m, by_id.get(m.agent_id)) for m in view.messages],
            "has_more": view.has_more,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
        }


class _AttachAgent:
    """A message row with its agent at hand, for ``ConversationMessageSchema``."""

    def __init__(self, message: ConversationMessage, agent: Any) -> None:
        self.message, self.agent = message, agent

    def __getattr__(self, name: str) -> Any:
        return getattr(self.message, name)


class ConversationListSchema(Schema):
    items = fields.List(fields.Nested(ConversationSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class ConversationListArgsSchema(ListArgsSchema):
    type = fields.String(validate=validate.OneOf(TYPES))
    status = fields.String(validate=validate.OneOf(STATUSES))


class ChatConversationCreateSchema(Schema):
    """Seed 002: the agent that answers, a title, the caller's metadata."""

    agent_id = fields.UUID(required=True, data_key="agent_id")
    title = fields.String(validate=validate.Length(min=1, max=300))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))


class ProjectConversationCreateSchema(Schema):
    """Seed 001: the agents taking part (the first one answers), a type, an issue."""

    title = fields.String(validate=validate.Length(min=1, max=300))
    type = fields.String(load_default="general", validate=validate.OneOf(TYPES))
    agent_ids = fields.List(fields.UUID(), required=True, validate=validate.Length(min=1, max=20))
    issue_id = fields.UUID(allow_none=True)
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))


class ChatMessageSchema(Schema):
    """Seed 002: ``message`` (length checked against the configured maximum by the
    command, with the envelope), request options, ``stream``."""

    message = fields.String(required=True)
    stream = fields.Boolean(load_default=False)
    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    max_tokens = fields.Integer(validate=validate.Range(min=1, max=100_000))
    wait_seconds = fields.Float(validate=validate.Range(min=0, max=600))


class ProjectMessageSchema(Schema):
    content = fields.String(required=True)
    reply_to = fields.UUID(allow_none=True)


class ConversationArgsSchema(Schema):
    before = fields.UUID()
    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT * 2))


class ChatReplySchema(ConversationMessageSchema):
    """Seed 002's answer to a message: the reply (``content``, ``tokens_used``, ``cost``)
    and the user's own message id."""


class PostedSchema(Schema):
    """Seed 001's answer to a message: the user's message and the reply it started."""

    message = fields.Nested(ConversationMessageSchema)
    reply = fields.Nested(ConversationMessageSchema)


class ResetResultSchema(Schema):
    agent_id = fields.UUID()
    conversations_ended = fields.Integer()
    memory_cleared = fields.Boolean()
