"""Full-text search over one organization's own finished job outputs and conversation
messages (the ``search`` tool). PostgreSQL: ``websearch_to_tsquery`` against the GIN-indexed
``to_tsvector('english', output)`` of each completed step, ranked with ``ts_rank``.
SQLite (the embedded mode): a plain substring match, unranked.

Every query is filtered on the organization first: another organization's rows are never
read, whatever the query says.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Conversation, ConversationMessage, Job, JobStep, StepStatus

SNIPPET_CHARS = 300
# Must match the expressions of ix_job_steps_output_fts (migration 0008) and
# ix_conversation_messages_content_fts (0009) to use the indexes.
_DOCUMENT = sa.func.to_tsvector(
    sa.literal_column("'english'"), sa.func.coalesce(JobStep.output, sa.literal_column("''"))
)
_MESSAGE = sa.func.to_tsvector(sa.literal_column("'english'"), ConversationMessage.content)


@dataclass(frozen=True)
class SearchHit:
    source: str  # "job_output" | "message"
    job_id: uuid.UUID | None  # a message's: the job that wrote the reply (None: a user's)
    job_title: str  # a message's: its conversation's title
    step: str  # a message's: "user" or "assistant"
    rank: float
    snippet: str
    conversation_id: uuid.UUID | None = None


def search_outputs(
    session: Session,
    *,
    organization_id: uuid.UUID,
    query: str,
    limit: int = 5,
    exclude_job_id: uuid.UUID | None = None,
    timeout_ms: int | None = None,
) -> list[SearchHit]:
    """Finished step outputs and conversation messages (issue 11) in one ranked list: a
    UNION ALL of the two sources, each filtered on the organization first."""
    query = query.strip()
    if not query:
        return []
    postgres = session.bind.dialect.name == "postgresql"
    if postgres and timeout_ms:
        # A search never holds the worker longer than the tool's own bound.
        session.execute(sa.text(f"SET LOCAL statement_timeout = {int(timeout_ms)}"))
    outputs = (
        sa.select(
            sa.literal("job_output").label("source"), JobStep.job_id.label("job_id"),
            sa.cast(sa.null(), sa.Uuid()).label("conversation_id"), Job.title.label("title"),
            JobStep.name.label("name"), JobStep.output.label("text"),
            JobStep.completed_at.label("at"),
        )
        .join(Job, Job.id == JobStep.job_id)
        .where(
            Job.organization_id == organization_id,
            JobStep.status == StepStatus.COMPLETED.value,
        )
    )  # fmt: skip
    messages = (
        sa.select(
            sa.literal("message").label("source"), ConversationMessage.job_id.label("job_id"),
            ConversationMessage.conversation_id.label("conversation_id"),
            Conversation.title.label("title"), ConversationMessage.role.label("name"),
            ConversationMessage.content.label("text"), ConversationMessage.created_at.label("at"),
        )
        .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
        .where(
            ConversationMessage.organization_id == organization_id,
            ConversationMessage.content != "",
        )
    )  # fmt: skip
    if exclude_job_id is not None:
        outputs = outputs.where(JobStep.job_id != exclude_job_id)
        messages = messages.where(
            sa.or_(
                ConversationMessage.job_id.is_(None), ConversationMessage.job_id != exclude_job_id
            )
        )
    if postgres:
        tsquery = sa.func.websearch_to_tsquery(sa.literal_column("'english'"), query)
        outputs = outputs.add_columns(sa.func.ts_rank(_DOCUMENT, tsquery).label("rank")).where(
            _DOCUMENT.op("@@")(tsquery)
        )
        messages = messages.add_columns(sa.func.ts_rank(_MESSAGE, tsquery).label("rank")).where(
            _MESSAGE.op("@@")(tsquery)
        )
    else:
        outputs = outputs.add_columns(sa.literal(0.0).label("rank")).where(
            JobStep.output.ilike(f"%{query}%")
        )
        messages = messages.add_columns(sa.literal(0.0).label("rank")).where(
            ConversationMessage.content.ilike(f"%{query}%")
        )
    both = sa.union_all(outputs, messages).subquery()
    stmt = sa.select(both).order_by(both.c.rank.desc(), both.c.at.desc()).limit(limit)
    return [
        SearchHit(
            source=row.source,
            job_id=row.job_id,
            job_title=row.title,
            step=row.name,
            rank=round(float(row.rank), 6),
            snippet=" ".join((row.text or "").split())[:SNIPPET_CHARS],
            conversation_id=row.conversation_id,
        )
        for row in session.execute(stmt)
    ]
