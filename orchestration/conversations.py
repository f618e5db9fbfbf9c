"""Conversations: a user's message, a reply the engine writes, one reply at a time.

A user message is stored with a ``queued`` assistant message beside it (so a streaming
client has the reply's id at once). A conversation's replies run one at a time and in
order: under the conversation's row lock, the oldest ``queued`` reply becomes a ``chat``
job of one step when no other reply of the conversation is ``pending`` and the
conversation is active. The worker's step writes the reply (``reply_finished``) and, in
the same transaction, starts the next; every job is sent after its transaction commits.
A paused conversation keeps taking messages; resume starts the oldest waiting reply.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    TERMINAL_STATUSES,
    Agent,
    Conversation,
    ConversationMessage,
    ConversationStatus,
    Job,
    JobEvent,
    JobKind,
    MessageStatus,
    Project,
    ProjectIssue,
    utcnow,
)
from models.db import transaction
from orchestration import budget, canvas, jobs, live, webhooks
from orchestration.errors import BudgetExceeded, Conflict, DomainError, NotFound, field_error
from orchestration.listing import Page, PageRequest, paginate
from orchestration.ownership import get_owned
from orchestration.principal import Principal

log = logging.getLogger(__name__)

POLL_SECONDS = 0.05
DEFAULT_MESSAGE_LIMIT = 50
MAX_MESSAGE_LIMIT = 200
OPEN_REPLY = (MessageStatus.QUEUED.value, MessageStatus.PENDING.value)
_TO_SEND = "baton.conversations.to_send"


@dataclass
class ConversationView:
    conversation: Conversation
    agents: list[Agent] = field(default_factory=list)
    messages: list[ConversationMessage] = field(default_factory=list)
    has_more: bool = False
    message_count: int = 0


@dataclass
class Posted:
    message: ConversationMessage
    reply: ConversationMessage


# -- helpers (session in, never commit) -------------------------------------------------


def _agent(session: Session, principal: Principal, agent_id: uuid.UUID | None) -> Agent:
    return get_owned(
        session, Agent, agent_id, organization_id=principal.organization_id, field="agent_id"
    )


def owned_conversation(
    session: Session,
    *,
    principal: Principal,
    conversation_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    lock: bool = False,
) -> Conversation:
    """The caller's conversation (under ``project_id`` when given); anything else is 404."""
    conversation = get_owned(
        session, Conversation, conversation_id, organization_id=principal.organization_id,
        lock=lock,
    )  # fmt: skip
    if project_id is not None and conversation.project_id != project_id:
        raise NotFound(f"conversation {conversation_id} not found")
    return conversation


def _project(session: Session, principal: Principal, project_id: uuid.UUID) -> Project:
    return get_owned(session, Project, project_id, organization_id=principal.organization_id)


def _message_data(message: ConversationMessage) -> dict[str, Any]:
    """What webhooks and Socket.IO carry for a message (the REST shape's core)."""
    return {
        "id": str(message.id),
        "conversation_id": str(message.conversation_id),
        "role": message.role,
        "author_type": "agent" if message.role == "assistant" else "user",
        "agent_id": str(message.agent_id) if message.agent_id else None,
        "content": message.content,
        "status": message.status,
        "error": message.error,
        "tokens_in": message.tokens_in,
        "tokens_out": message.tokens_out,
        "cost": str(message.cost or 0),
        "reply_to": str(message.reply_to_id) if message.reply_to_id else None,
        "created_at": live.iso(message.created_at),
    }


def socket_message_fields(agent: Agent | None, cost: Any = None) -> dict[str, Any]:
    """What seed 001's Socket.IO ``message`` needs beyond Baton's payload ("same as REST
    message object"): the nested ``agent`` and ``cost_usd`` as a JSON number, added
    alongside ``agent_id`` and the exact decimal string ``cost`` (docs/dialects-command-center.md)."""
    out: dict[str, Any] = {
        "agent": {"id": str(agent.id), "name": agent.name, "type": agent.type} if agent else None
    }
    if cost is not None:
        out["cost_usd"] = float(cost)
    return out


def _announce(session: Session, message: ConversationMessage) -> None:
    """The message's webhook (outbox, same transaction) and Socket.IO event (after commit)."""
    data = _message_data(message)
    webhooks.record_event(
        session,
        organization_id=message.organization_id,
        event_type="conversation.message",
        data=data,
    )
    agent = session.get(Agent, message.agent_id) if message.agent_id else None
    live.emit_after_commit(
        session,
        "message",
        {**data, **socket_message_fields(agent, message.cost or 0)},
        organization_id=message.organization_id,
        room=live.conversation_room(message.conversation_id),
    )


def _next_seq(session: Session, conversation: Conversation) -> int:
    conversation.message_seq = (conversation.message_seq or 0) + 1
    return conversation.message_seq


def _send_after_commit(session: Session, job: Job, phases: list[Any], steps: list[Any]) -> None:
    session.info.setdefault(_TO_SEND, []).append((job, phases, steps))


@sa.event.listens_for(Session, "after_commit")
def _send_committed(session: Session) -> None:
    for job, phases, steps in session.info.pop(_TO_SEND, []):
        try:
            canvas.enqueue(job, phases, steps)
        except Exception:  # the job row is queued: beat's reaper sends it again
            log.exception("could not enqueue the reply job %s", job.id)


@sa.event.listens_for(Session, "after_rollback")
def _forget_rolled_back(session: Session) -> None:
    session.info.pop(_TO_SEND, None)


def start_next_reply(session: Session, conversation: Conversation) -> Job | None:
    """Start the conversation's oldest waiting reply, unless one is running or the
    conversation is not active. The caller holds the conversation's row lock."""
    if conversation.status != ConversationStatus.ACTIVE.value:
        return None
    replies = list(
        session.scalars(
            sa.select(ConversationMessage)
            .where(
                ConversationMessage.conversation_id == conversation.id,
                ConversationMessage.status.in_(OPEN_REPLY),
            )
            .order_by(ConversationMessage.seq)
        )
    )
    running = [r for r in replies if r.status == MessageStatus.PENDING.value]
    for reply in running:
        # A reply whose job ended without writing it (cancelled before its step ran).
        status = session.scalar(sa.select(Job.status).where(Job.id == reply.job_id))
        if status is None or status in TERMINAL_STATUSES:
            _refuse(session, reply, f"JOB_{str(status).upper()}: the reply's job ended")
            return start_next_reply(session, conversation)
    if not replies or running:
        return None
    reply = replies[0]
    question = session.get(ConversationMessage, reply.reply_to_id) if reply.reply_to_id else None
    agent = session.get(Agent, conversation.agent_id) if conversation.agent_id else None
    if agent is None or question is None or question.author_id is None:
        _refuse(session, reply, "AGENT_NOT_FOUND: the conversation's agent no longer exists")
        return start_next_reply(session, conversation)
    # The reply is charged to whoever asked (their limits, their quota).
    asker = Principal(question.author_id, conversation.organization_id, "member")
    try:
        with session.begin_nested():
            job, phases, steps = jobs.create_job_rows(
                session,
                principal=asker,
                submission=jobs.JobSubmission(
                    kind=JobKind.CHAT,
                    title=f"Reply in conversation {conversation.title}"[:200],
                    input={
                        "conversation_id": str(conversation.id),
                        "message": question.content,
                        "message_id": str(question.id),
                        "reply_message_id": str(reply.id),
                    },
                    # Streamed, so every live channel carries the reply as it is written.
                    settings={**(reply.options or {}), "stream": True},
                    agent_id=agent.id,
                    project_id=conversation.project_id,
                    priority="high",
                ),
            )
    except DomainError as exc:  # a limit spent meanwhile, an agent model gone: no call
        _refuse(session, reply, f"{exc.code}: {exc.message}")
        return start_next_reply(session, conversation)
    reply.status = MessageStatus.PENDING.value
    reply.job_id = job.id
    _send_after_commit(session, job, phases, steps)
    live.emit_after_commit(
        session,
        "agent_typing",
        {"conversation_id": str(conversation.id), "agent_id": str(agent.id), "is_typing": True},
        organization_id=conversation.organization_id,
        room=live.conversation_room(conversation.id),
    )
    return job


def _refuse(session: Session, reply: ConversationMessage, reason: str) -> None:
    reply.status = MessageStatus.FAILED.value
    reply.error = reason
    reply.completed_at = utcnow()
    session.flush()
    _announce(session, reply)


# -- commands ---------------------------------------------------------------------------


def create_conversation(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    title: str | None,
    agent_id: uuid.UUID | None = None,
    agent_ids: list[uuid.UUID] | None = None,
    project_id: uuid.UUID | None = None,
    type: str = "general",
    issue_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
    new_agent: dict[str, Any] | None = None,
) -> ConversationView:
    """Seed 002 names one ``agent``; seed 001 names ``agent_ids`` (the first one answers).
    ``new_agent`` (an agent's data, as for ``agents.create_agent``): the conversation's
    own agent, created with it (seed 002's dialect names a provider, model and system
    prompt instead of an agent)."""
    from orchestration import agents as agent_store  # agents -> projects -> conversations

    ids = list(agent_ids or ([] if agent_id is None else [agent_id]))
    if not ids and new_agent is None:
        raise field_error("agent_id", "a conversation needs an agent to answer")
    with transaction(sessions) as session:
        if project_id is not None:
            _project(session, principal, project_id)
        agents = [_agent(session, principal, a) for a in ids]
        if new_agent is not None:
            agents.append(agent_store.add_agent(session, principal=principal, data=new_agent))
        if issue_id is not None:
            issue = session.get(ProjectIssue, issue_id)
            if issue is None or issue.project_id != project_id:
                raise NotFound(
                    f"issue {issue_id} not found", [{"field": "issue_id", "message": "not found"}]
                )
        conversation = Conversation(
            id=uuid.uuid4(),
            organization_id=principal.organization_id,
            project_id=project_id if project_id is not None else agents[0].project_id,
            agent_id=agents[0].id,
            agent_ids=[str(a.id) for a in agents],
            created_by_id=principal.user_id,
            title=title or f"Conversation with {agents[0].name}",
            type=type,
            status=ConversationStatus.ACTIVE.value,
            issue_id=issue_id,
            meta=metadata or {},
            message_seq=0,
        )
        session.add(conversation)
        session.flush()
        return ConversationView(conversation=conversation, agents=agents)


def post_message(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    conversation_id: uuid.UUID,
    content: str,
    project_id: uuid.UUID | None = None,
    reply_to: uuid.UUID | None = None,
    options: dict[str, Any] | None = None,
) -> Posted:
    """Store the user's message and its (queued) reply; start the reply if it is next."""
    settings = get_settings()
    if not content or not content.strip():
        raise field_error("message", "the message is empty")
    if len(content) > settings.chat_max_message_chars:
        raise field_error(
            "message", f"the message is longer than {settings.chat_max_message_chars} characters"
        )
    with transaction(sessions) as session:
        conversation = owned_conversation(
            session, principal=principal, conversation_id=conversation_id,
            project_id=project_id, lock=True,
        )  # fmt: skip
        if conversation.status == ConversationStatus.COMPLETED.value:
            raise Conflict("The conversation has ended; start a new one")
        agent = _agent(session, principal, conversation.agent_id)
        if reply_to is not None:
            target = session.get(ConversationMessage, reply_to)
            if target is None or target.conversation_id != conversation.id:
                raise NotFound(
                    f"message {reply_to} not found", [{"field": "reply_to", "message": "not found"}]
                )
        scope = budget.CallScope(
            principal.organization_id, conversation.project_id, agent.id, principal.user_id
        )
        if spent := budget.blocking_limit_spent(session, scope):
            raise BudgetExceeded(
                f"Budget limit '{spent.name}' ({spent.amount_usd} USD {spent.period}) is already spent",
                [{"limit_id": str(spent.id), "scope_type": spent.scope_type, "period": spent.period}],
            )  # fmt: skip
        now = utcnow()
        message = ConversationMessage(
            id=uuid.uuid4(), conversation_id=conversation.id,
            organization_id=conversation.organization_id, seq=_next_seq(session, conversation),
            role="user", author_id=principal.user_id, reply_to_id=reply_to, content=content,
            status=MessageStatus.COMPLETED.value, tokens_in=0, tokens_out=0, cost=Decimal(0),
            created_at=now, completed_at=now,
        )  # fmt: skip
        reply = ConversationMessage(
            id=uuid.uuid4(), conversation_id=conversation.id,
            organization_id=conversation.organization_id, seq=_next_seq(session, conversation),
            role="assistant", agent_id=agent.id, reply_to_id=message.id, content="",
            status=MessageStatus.QUEUED.value, tokens_in=0, tokens_out=0, cost=Decimal(0),
            created_at=now, options={k: v for k, v in (options or {}).items() if v is not None},
        )  # fmt: skip
        conversation.updated_at = now
        session.add_all([message, reply])
        session.flush()
        _announce(session, message)
        start_next_reply(session, conversation)
        session.flush()
        return Posted(message=message, reply=reply)


def set_paused(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    conversation_id: uuid.UUID,
    paused: bool,
    project_id: uuid.UUID | None = None,
) -> ConversationView:
    """Pause: replies not yet started wait (one already running finishes). Resume: the
    oldest waiting reply starts, then the rest in order."""
    with transaction(sessions) as session:
        conversation = owned_conversation(
            session, principal=principal, conversation_id=conversation_id,
            project_id=project_id, lock=True,
        )  # fmt: skip
        if conversation.status == ConversationStatus.COMPLETED.value:
            raise Conflict("The conversation has ended")
        conversation.status = (
            ConversationStatus.PAUSED.value if paused else ConversationStatus.ACTIVE.value
        )
        conversation.updated_at = utcnow()
        if not paused:
            start_next_reply(session, conversation)
        session.flush()
        return _view(session, conversation)


def reset_agent(session: Session, *, agent: Agent) -> int:
    """Seed 001's agent reset: the agent's conversations end (their waiting replies are
    dropped) and their history is no longer anyone's prompt. Returns how many ended."""
    ended = list(
        session.scalars(
            sa.select(Conversation)
            .where(
                Conversation.agent_id == agent.id,
                Conversation.status != ConversationStatus.COMPLETED.value,
            )
            .with_for_update()
        )
    )
    now = utcnow()
    for conversation in ended:
        conversation.status = ConversationStatus.COMPLETED.value
        conversation.updated_at = now
        conversation.meta = {**(conversation.meta or {}), "ended_by": "agent_reset"}
        for reply in session.scalars(
            sa.select(ConversationMessage).where(
                ConversationMessage.conversation_id == conversation.id,
                ConversationMessage.status == MessageStatus.QUEUED.value,
            )
        ):
            _refuse(session, reply, "AGENT_RESET: the agent was reset before this reply started")
    return len(ended)


# -- the worker's side (engine hooks; the step's transaction) ---------------------------


def _reply_of_job(session: Session, job: Job) -> tuple[ConversationMessage, Conversation] | None:
    reply_id = (job.input or {}).get("reply_message_id")
    if not reply_id:
        return None
    conversation_id = session.scalar(
        sa.select(ConversationMessage.conversation_id).where(
            ConversationMessage.id == uuid.UUID(reply_id)
        )
    )
    if conversation_id is None:
        return None
    # The conversation's row lock first, as a post takes it: one lock order, no deadlock.
    conversation = session.scalar(
        sa.select(Conversation).where(Conversation.id == conversation_id).with_for_update()
    )
    reply = session.get(
        ConversationMessage, uuid.UUID(reply_id), with_for_update=True, populate_existing=True
    )
    return reply, conversation


def reply_finished(
    session: Session,
    *,
    job: Job,
    text: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
    error: str | None = None,
) -> None:
    """The reply's step ended: its text, tokens and cost (what the ledger charged for it),
    or its failure with what was generated; then the conversation's next reply starts."""
    found = _reply_of_job(session, job)
    if found is None:
        return
    reply, conversation = found
    if reply.status != MessageStatus.PENDING.value:
        return  # written already (a retried write)
    reply.content = text
    reply.tokens_in, reply.tokens_out, reply.cost = prompt_tokens, completion_tokens, cost
    reply.status = MessageStatus.FAILED.value if error else MessageStatus.COMPLETED.value
    reply.error = error
    reply.completed_at = utcnow()
    conversation.updated_at = reply.completed_at
    session.flush()
    _announce(session, reply)
    live.emit_after_commit(
        session,
        "agent_typing",
        {
            "conversation_id": str(conversation.id),
            "agent_id": str(reply.agent_id) if reply.agent_id else None,
            "is_typing": False,
        },
        organization_id=conversation.organization_id,
        room=live.conversation_room(conversation.id),
    )
    start_next_reply(session, conversation)


def streamed_text(session: Session, *, job_id: uuid.UUID) -> str:
    """The text the job's last streamed attempt produced, from its ``step.progress`` rows
    (what a failed reply keeps)."""
    rows = list(
        session.scalars(
            sa.select(JobEvent.data)
            .where(JobEvent.job_id == job_id, JobEvent.type == "step.progress")
            .order_by(JobEvent.seq)
        )
    )
    if not rows:
        return ""
    last = max(int(r.get("attempt") or 0) for r in rows)
    return "".join(r.get("delta") or "" for r in rows if int(r.get("attempt") or 0) == last)


def history(
    session: Session, *, job: Job, count_tokens: Any, budget_tokens: int
) -> list[dict[str, str]]:
    """The conversation up to the message being answered, newest first into the token
    budget (the oldest drop out), returned oldest first as chat messages."""
    reply_id = (job.input or {}).get("reply_message_id")
    reply = session.get(ConversationMessage, uuid.UUID(reply_id)) if reply_id else None
    if reply is None:
        return []
    rows = session.scalars(
        sa.select(ConversationMessage)
        .where(
            ConversationMessage.conversation_id == reply.conversation_id,
            ConversationMessage.seq < reply.seq,
            ConversationMessage.content != "",
        )
        .order_by(ConversationMessage.seq.desc())
    )
    picked: list[dict[str, str]] = []
    used = 0
    for row in rows:
        if row.role == "assistant" and row.status not in (
            MessageStatus.COMPLETED.value,
            MessageStatus.FAILED.value,
        ):
            continue
        entry = {"role": "assistant" if row.role == "assistant" else "user", "content": row.content}
        tokens = count_tokens(entry)
        if picked and used + tokens > budget_tokens:
            break
        picked.append(entry)
        used += tokens
    return list(reversed(picked))


# -- queries ----------------------------------------------------------------------------


def _agents_of(session: Session, conversation: Conversation) -> list[Agent]:
    ids = [uuid.UUID(a) for a in conversation.agent_ids or []]
    if not ids:
        return []
    found = {a.id: a for a in session.scalars(sa.select(Agent).where(Agent.id.in_(ids)))}
    return [found[i] for i in ids if i in found]


def _view(
    session: Session,
    conversation: Conversation,
    *,
    before: uuid.UUID | None = None,
    limit: int = DEFAULT_MESSAGE_LIMIT,
) -> ConversationView:
    stmt = sa.select(ConversationMessage).where(
        ConversationMessage.conversation_id == conversation.id
    )
    if before is not None:
        cursor = session.get(ConversationMessage, before)
        if cursor is None or cursor.conversation_id != conversation.id:
            raise field_error("before", f"message {before} is not in this conversation")
        stmt = stmt.where(ConversationMessage.seq < cursor.seq)
    # The newest page first; each page is returned oldest first.
    rows = list(session.scalars(stmt.order_by(ConversationMessage.seq.desc()).limit(limit + 1)))
    has_more = len(rows) > limit
    count = session.scalar(
        sa.select(sa.func.count()).where(ConversationMessage.conversation_id == conversation.id)
    )
    return ConversationView(
        conversation=conversation,
        agents=_agents_of(session, conversation),
        messages=list(reversed(rows[:limit])),
        has_more=has_more,
        message_count=count or 0,
    )


def get_conversation(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    conversation_id: uuid.UUID,
    project_id: uuid.UUID | None = None,
    before: uuid.UUID | None = None,
    limit: int = DEFAULT_MESSAGE_LIMIT,
) -> ConversationView:
    limit = max(1, min(limit, MAX_MESSAGE_LIMIT))
    with transaction(sessions) as session:
        conversation = owned_conversation(
            session, principal=principal, conversation_id=conversation_id, project_id=project_id
        )
        return _view(session, conversation, before=before, limit=limit)


def list_conversations(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    page: PageRequest,
    project_id: uuid.UUID | None = None,
    type: str | None = None,
    status: str | None = None,
) -> Page[ConversationView]:
    with transaction(sessions) as session:
        if project_id is not None:
            _project(session, principal, project_id)
        stmt = sa.select(Conversation).where(
            Conversation.organization_id == principal.organization_id
        )
        if project_id is not None:
            stmt = stmt.where(Conversation.project_id == project_id)
        if type:
            stmt = stmt.where(Conversation.type == type)
        if status:
            stmt = stmt.where(Conversation.status == status)
        found = paginate(session, stmt.order_by(Conversation.updated_at.desc()), page)
        views = [_view(session, c, limit=1) for c in found.items]
        for view in views:
            view.messages = []  # a list shows conversations, not their messages
        return Page(items=views, total=found.total, limit=found.limit, offset=found.offset)


def get_message(
    sessions: sessionmaker[Session], *, principal: Principal, message_id: uuid.UUID
) -> ConversationMessage:
    with transaction(sessions) as session:
        return get_owned(
            session, ConversationMessage, message_id,
            organization_id=principal.organization_id, what="message",
        )  # fmt: skip


def wait_for_reply(
    sessions: sessionmaker[Session], *, principal: Principal, reply_id: uuid.UUID, seconds: float
) -> ConversationMessage:
    """The reply once it is finished (or failed), or as it stands after ``seconds``
    (never longer than the API's worker timeout allows)."""
    deadline = time.monotonic() + min(seconds, get_settings().max_wait_seconds)
    while True:
        message = get_message(sessions, principal=principal, message_id=reply_id)
        if message.status not in OPEN_REPLY or time.monotonic() >= deadline:
            return message
        time.sleep(POLL_SECONDS)


def active_conversations(session: Session, project_ids: list[uuid.UUID]) -> dict[uuid.UUID, int]:
    """Project stats (seed 001): conversations not ended, per project."""
    if not project_ids:
        return {}
    rows = session.execute(
        sa.select(Conversation.project_id, sa.func.count())
        .where(
            Conversation.project_id.in_(project_ids),
            Conversation.status != ConversationStatus.COMPLETED.value,
        )
        .group_by(Conversation.project_id)
    )
    return {pid: n for pid, n in rows}


# -- a reply as it is written (seed 002's ``stream: true``) -----------------------------


class _Tokens:
    """The reply's text handed out so far: pieces from live chunks or from the event
    rows (whichever arrives first), each character once, one attempt's text only."""

    def __init__(self) -> None:
        self.attempt: int | None = None
        self.text: list[str] = []
        self.chars = 0

    def take(self, attempt: int, offset: int, delta: str) -> str | None:
        if self.attempt is None:
            self.attempt = attempt
        elif attempt != self.attempt:
            if self.chars:  # a retried stream after text went out: the rows settle it
                return None
            self.attempt = attempt
        end = offset + len(delta)
        if offset > self.chars or end <= self.chars:
            return None  # a gap (the rows fill it) or text already sent
        piece = delta[self.chars - offset :]
        self.text.append(piece)
        self.chars = end
        return piece


def reply_events(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    reply: ConversationMessage,
    seconds: float,
) -> Iterator[dict[str, Any]]:
    """``start``, ``token``... as the worker writes the reply, then ``done`` (tokens_used,
    cost: the reply row's, i.e. the ledger's). Past ``seconds`` (bounded by the API's
    worker timeout) it ends with ``pending``: the reply goes on and is stored anyway, as
    it is when the client goes away."""
    from orchestration import streams

    deadline = time.monotonic() + min(seconds, get_settings().max_wait_seconds)
    yield {
        "type": "start",
        "message_id": str(reply.id),
        "conversation_id": str(reply.conversation_id),
    }
    current = reply
    while current.job_id is None and current.status in OPEN_REPLY:
        if time.monotonic() >= deadline:
            yield {"type": "pending", "message_id": str(reply.id), "status": current.status}
            return
        time.sleep(POLL_SECONDS * 2)
        current = get_message(sessions, principal=principal, message_id=reply.id)
    tokens = _Tokens()
    if current.job_id is not None and current.status in OPEN_REPLY:
        stream = streams.open_job_stream(sessions, principal=principal, job_id=current.job_id)
        for item in stream:
            body = item.body
            piece = None
            if item.kind == "delta":
                start = int(body.get("output_chars", 0)) - len(body.get("delta") or "")
                piece = tokens.take(int(body.get("attempt") or 0), start, body.get("delta") or "")
            elif item.kind == "event" and body.get("event") == "step.progress":
                data = body.get("data") or {}
                piece = tokens.take(
                    int(data.get("attempt") or 0),
                    int(data.get("offset") or 0),
                    data.get("delta") or "",
                )
            if piece:
                yield {"type": "token", "content": piece}
            if item.kind in ("end", "dropped") or (
                item.kind == "event" and body.get("event") in ("step.completed", "step.failed")
            ):
                break
            if time.monotonic() >= deadline:
                yield {"type": "pending", "message_id": str(reply.id), "status": "pending"}
                return
    current = wait_for_reply(
        sessions,
        principal=principal,
        reply_id=reply.id,
        seconds=max(deadline - time.monotonic(), 0),
    )
    if current.status in OPEN_REPLY:
        yield {"type": "pending", "message_id": str(reply.id), "status": current.status}
        return
    sent = "".join(tokens.text)
    if current.content.startswith(sent) and len(current.content) > len(sent):
        yield {"type": "token", "content": current.content[len(sent) :]}
    done: dict[str, Any] = {
        "type": "done",
        "message_id": str(reply.id),
        "status": current.status,
        "tokens_used": current.tokens_in + current.tokens_out,
        "cost": str(current.cost),
    }
    if current.error:
        done["error"] = current.error
    yield done


def reset_project_agent(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    agent_id: uuid.UUID,
) -> int:
    """Seed 001 ``POST /projects/{id}/agents/{id}/reset``: the agent's conversations end
    (their history no longer feeds any prompt) and the agent is idle and active again."""
    with transaction(sessions) as session:
        _project(session, principal, project_id)
        agent = _agent(session, principal, agent_id)
        if agent.project_id != project_id:
            raise NotFound(f"agent {agent_id} not found in project {project_id}")
        ended = reset_agent(session, agent=agent)
        agent.status = "active"
        return ended
