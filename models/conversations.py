"""Conversations (seed 001 under a project, seed 002 under /chat) and their messages."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin, utcnow


class ConversationStatus(enum.StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"
    COMPLETED = "completed"


class MessageStatus(enum.StrEnum):
    COMPLETED = "completed"  # a user's message, or a finished reply
    QUEUED = "queued"  # a reply waiting for the one before it (or for a resume)
    PENDING = "pending"  # a reply whose chat job has been sent
    FAILED = "failed"  # a reply the provider failed; any partial text is kept


class Conversation(IdMixin, TimestampMixin, Base):
    __tablename__ = "conversations"
    __table_args__ = (sa.Index("ix_conversations_org_created", "organization_id", "created_at"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="CASCADE"), index=True
    )
    # The agent that answers (seed 001's first of ``agent_ids``); a deleted agent leaves
    # the conversation readable but unable to take messages.
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(sa.String(300))
    type: Mapped[str] = mapped_column(sa.String(20), default="general")
    status: Mapped[str] = mapped_column(sa.String(20), default=ConversationStatus.ACTIVE.value)
    agent_ids: Mapped[list[Any]] = mapped_column(default=list)
    issue_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("project_issues.id", ondelete="SET NULL")
    )
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # Messages are numbered 1, 2, ... under the conversation's row lock: their order
    # (and the cursor's) never depends on clock ties.
    message_seq: Mapped[int] = mapped_column(default=0)


class ConversationMessage(IdMixin, Base):
    __tablename__ = "conversation_messages"
    __table_args__ = (
        sa.UniqueConstraint("conversation_id", "seq", name="uq_conversation_messages_seq"),
        sa.Index("ix_conversation_messages_org_created", "organization_id", "created_at"),
        # The tools' full-text search over messages (orchestration/search.py).
        sa.Index(
            "ix_conversation_messages_content_fts",
            sa.text("to_tsvector('english'::regconfig, content)"),
            postgresql_using="gin",
        ),
    )

    conversation_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("conversations.id", ondelete="CASCADE")
    )
    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    seq: Mapped[int]
    role: Mapped[str] = mapped_column(sa.String(20))  # user | assistant
    author_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    reply_to_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("conversation_messages.id", ondelete="SET NULL")
    )
    # The chat job that wrote this reply; its ledger rows are the reply's cost.
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    content: Mapped[str] = mapped_column(sa.Text, default="")
    status: Mapped[str] = mapped_column(sa.String(20), default=MessageStatus.COMPLETED.value)
    error: Mapped[str | None] = mapped_column(sa.Text)
    # A reply's request options (seed 002's temperature, max_tokens): its job's settings.
    options: Mapped[dict[str, Any]] = mapped_column(default=dict)
    tokens_in: Mapped[int] = mapped_column(default=0)
    tokens_out: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[datetime | None]
