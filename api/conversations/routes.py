"""Conversations: seed 002's ``/chat/conversations`` and seed 001's project conversations.

A message's reply is a ``chat`` job on the engine. Seed 002 waits a bounded time for it
(or, with ``stream: true``, answers the POST itself as Server-Sent Events: ``start``,
``token``..., ``done``); seed 001 answers at once and the reply arrives over Socket.IO.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

from flask import Response, url_for
from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.schemas import page_request
from api.conversations.schemas import (
    ChatConversationCreateSchema,
    ChatMessageSchema,
    ChatReplySchema,
    ConversationArgsSchema,
    ConversationListArgsSchema,
    ConversationListSchema,
    ConversationSchema,
    PostedSchema,
    ProjectConversationCreateSchema,
    ProjectMessageSchema,
    ResetResultSchema,
)
from api.security import current_principal, requires, sessions
from baton.settings import get_settings
from orchestration import conversations

blp = Blueprint(
    "conversations", __name__, url_prefix="/api/v1", description="Conversations with agents"
)

SSE_DOC = {
    "responses": {
        "200": {
            "description": "with stream: true, text/event-stream: data: {type: start, "
            "message_id}, {type: token, content}..., {type: done, tokens_used, cost}",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
}


def _sse(events: Iterator[dict[str, Any]]) -> Response:
    def chunks() -> Iterator[bytes]:
        for event in events:
            yield f"data: {json.dumps(event)}\n\n".encode()

    return Response(
        chunks(),
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        direct_passthrough=True,
    )


# -- seed 002 -----------------------------------------------------------------------------


@blp.route("/chat/conversations")
class ChatConversations(MethodView):
    @requires("job:read")
    @blp.arguments(ConversationListArgsSchema, location="query")
    @blp.response(200, ConversationListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's conversations, most recently active first."""
        return conversations.list_conversations(
            sessions(), principal=current_principal(), page=page_request(args),
            type=args.get("type"), status=args.get("status"),
        )  # fmt: skip

    @requires("job:create")
    @blp.arguments(ChatConversationCreateSchema)
    @blp.response(201, ConversationSchema)
    def post(self, data: dict[str, Any]):
        """Start a conversation with an agent."""
        return conversations.create_conversation(
            sessions(), principal=current_principal(), agent_id=data["agent_id"],
            title=data.get("title"), metadata=data.get("metadata"),
        )  # fmt: skip


@blp.route("/chat/conversations/<uuid:conversation_id>")
class ChatConversationById(MethodView):
    @requires("job:read")
    @blp.arguments(ConversationArgsSchema, location="query")
    @blp.response(200, ConversationSchema)
    def get(self, args: dict[str, Any], conversation_id: uuid.UUID):
        """A conversation with its latest messages (older ones: ``before``)."""
        return conversations.get_conversation(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            before=args.get("before"), limit=args["limit"],
        )  # fmt: skip


@blp.route("/chat/conversations/<uuid:conversation_id>/messages")
class ChatMessages(MethodView):
    @requires("job:create")
    @blp.arguments(ChatMessageSchema)
    @blp.response(200, ChatReplySchema)
    @blp.alt_response(202, schema=ChatReplySchema, description="The reply is still being written")
    @blp.doc(**SSE_DOC)
    def post(self, data: dict[str, Any], conversation_id: uuid.UUID):
        """Send a message; the answer is the agent's reply (or its SSE stream)."""
        principal = current_principal()
        wait = data.get("wait_seconds", get_settings().chat_wait_seconds)
        posted = conversations.post_message(
            sessions(), principal=principal, conversation_id=conversation_id,
            content=data["message"],
            options={"temperature": data.get("temperature"), "max_tokens": data.get("max_tokens")},
        )  # fmt: skip
        if data["stream"]:
            return _sse(
                conversations.reply_events(
                    sessions(), principal=principal, reply=posted.reply, seconds=wait
                )
            )
        reply = conversations.wait_for_reply(
            sessions(), principal=principal, reply_id=posted.reply.id, seconds=wait
        )
        finished = reply.status not in conversations.OPEN_REPLY
        location = url_for("conversations.ChatConversationById", conversation_id=conversation_id)
        return reply, (200 if finished else 202), {"Location": location}


# -- seed 001 -----------------------------------------------------------------------------


@blp.route("/projects/<uuid:project_id>/conversations")
class ProjectConversations(MethodView):
    @requires("job:read")
    @blp.arguments(ConversationListArgsSchema, location="query")
    @blp.response(200, ConversationListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's conversations (filters: type, status)."""
        return conversations.list_conversations(
            sessions(), principal=current_principal(), page=page_request(args),
            project_id=project_id, type=args.get("type"), status=args.get("status"),
        )  # fmt: skip

    @requires("job:create")
    @blp.arguments(ProjectConversationCreateSchema)
    @blp.response(201, ConversationSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Start a conversation in the project; the first of ``agent_ids`` answers."""
        return conversations.create_conversation(
            sessions(), principal=current_principal(), agent_ids=data["agent_ids"],
            project_id=project_id, title=data.get("title"), type=data["type"],
            issue_id=data.get("issue_id"), metadata=data.get("metadata"),
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>")
class ProjectConversationById(MethodView):
    @requires("job:read")
    @blp.arguments(ConversationArgsSchema, location="query")
    @blp.response(200, ConversationSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID, conversation_id: uuid.UUID):
        """The conversation with a page of messages: ``before`` a message id, ``limit``,
        ``has_more`` (oldest first within the page)."""
        return conversations.get_conversation(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, before=args.get("before"), limit=args["limit"],
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/messages")
class ProjectMessages(MethodView):
    @requires("job:create")
    @blp.arguments(ProjectMessageSchema)
    @blp.response(201, PostedSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID, conversation_id: uuid.UUID):
        """Send a message; the reply is written by the conversation's agent (Socket.IO
        ``message`` events carry it as it is written)."""
        return conversations.post_message(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, content=data["content"], reply_to=data.get("reply_to"),
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/pause")
class PauseConversation(MethodView):
    @requires("job:create")
    @blp.response(200, ConversationSchema)
    def post(self, project_id: uuid.UUID, conversation_id: uuid.UUID):
        """Replies not yet started wait; messages are still taken."""
        return conversations.set_paused(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, paused=True,
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/conversations/<uuid:conversation_id>/resume")
class ResumeConversation(MethodView):
    @requires("job:create")
    @blp.response(200, ConversationSchema)
    def post(self, project_id: uuid.UUID, conversation_id: uuid.UUID):
        """The waiting messages are answered, in order."""
        return conversations.set_paused(
            sessions(), principal=current_principal(), conversation_id=conversation_id,
            project_id=project_id, paused=False,
        )  # fmt: skip


@blp.route("/projects/<uuid:project_id>/agents/<uuid:agent_id>/reset")
class ResetAgent(MethodView):
    @requires("agent:write")
    @blp.response(200, ResetResultSchema)
    def post(self, project_id: uuid.UUID, agent_id: uuid.UUID):
        """Seed 001: end the agent's conversations and clear its memory."""
        ended = conversations.reset_project_agent(
            sessions(), principal=current_principal(), project_id=project_id, agent_id=agent_id
        )
        return {"agent_id": agent_id, "conversations_ended": ended, "memory_cleared": True}
