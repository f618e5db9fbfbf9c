"""A conversation's reply on the step engine: the hooks ``workers/engine/`` calls for a
``chat`` job (building the prompt, streaming tokens, writing the reply message).

The logic of conversations is in ``orchestration/conversations.py``; this module only
adapts the engine's step context to it and counts tokens the way the provider layer does.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import JobKind
from models.db import transaction
from orchestration import conversations, live, model_catalog
from workers.providers import Attempt, CompletionRequest
from workers.providers.estimate import count_message_tokens

if TYPE_CHECKING:
    from workers.engine import StepContext

log = logging.getLogger(__name__)


def is_chat(ctx: StepContext) -> bool:
    return ctx.job.kind == JobKind.CHAT.value


def _provider_of(ctx: StepContext, request: CompletionRequest) -> str:
    catalog = ctx.providers.catalog if ctx.providers else model_catalog.operator_catalog()
    try:
        return catalog.resolve(request.model, request.providers).provider
    except Exception:  # an unknown model fails at the call, with its own error
        return ""


def with_history(
    sessions: sessionmaker[Session], ctx: StepContext, request: CompletionRequest
) -> CompletionRequest:
    """The prompt of a reply: the agent's instructions, then as much of the conversation
    as fits ``BATON_CHAT_HISTORY_TOKENS`` (counted with the model's tokenizer where it has
    one, exactly for ``sim``, else estimated), newest kept, oldest dropped."""
    provider = _provider_of(ctx, request)

    def count(message: dict[str, Any]) -> int:
        return count_message_tokens(provider, request.model, message)

    with transaction(sessions) as session:
        turns = conversations.history(
            session,
            job=ctx.job,
            count_tokens=count,
            budget_tokens=get_settings().chat_history_tokens,
        )
    if not turns:  # the reply's message is gone: answer the question alone
        turns = [{"role": "user", "content": ctx.step.spec.get("instruction", "")}]
    system = [m for m in request.messages if m.get("role") == "system"]
    return replace(request, messages=[*system, *turns])


def on_token(ctx: StepContext, attempt: Attempt, text: str, index: int) -> None:
    """Seed 001's Socket.IO: the reply as it is written, to the conversation's room."""
    data = {
        "id": ctx.job.input.get("reply_message_id"),
        "conversation_id": ctx.job.input.get("conversation_id"),
        "role": "assistant",
        "author_type": "agent",
        "agent_id": str(ctx.job.agent_id) if ctx.job.agent_id else None,
        "status": "streaming",
        "attempt": attempt.number,
        "index": index,
        "delta": text,
        **conversations.socket_message_fields(ctx.agent),
    }
    live.emit(
        "message",
        data,
        organization_id=ctx.job.organization_id,
        room=live.conversation_room(data["conversation_id"]),
    )


def reply_written(session: Session, ctx: StepContext, *, text: str, usage: dict[str, Any]) -> None:
    conversations.reply_finished(
        session,
        job=ctx.job,
        text=text or "",
        prompt_tokens=int(usage.get("prompt_tokens") or 0),
        completion_tokens=int(usage.get("completion_tokens") or 0),
        cost=Decimal(usage.get("cost") or 0),
    )


def reply_failed(
    session: Session,
    ctx: StepContext,
    *,
    error: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
) -> None:
    """A failed reply keeps what was generated (and what it cost: the ledger has it)."""
    session.flush()  # the step's last progress row, written in this transaction
    conversations.reply_finished(
        session,
        job=ctx.job,
        text=conversations.streamed_text(session, job_id=ctx.job.id),
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
        error=error,
    )
