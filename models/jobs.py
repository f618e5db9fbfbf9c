"""Jobs, their phases and steps, the event history, and the usage ledger."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin, utcnow


class JobKind(enum.StrEnum):
    TASK = "task"
    BUILD = "build"
    ANALYSIS = "analysis"
    ORCHESTRATION = "orchestration"
    AGENT_RUN = "agent_run"
    CHAT = "chat"


class JobStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})
ACTIVE_STATUSES = frozenset(
    {JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}
)


class StepStatus(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"


class Priority(enum.StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"
    URGENT = "urgent"


class Job(IdMixin, TimestampMixin, Base):
    __tablename__ = "jobs"
    __table_args__ = (
        sa.UniqueConstraint("organization_id", "idempotency_key", name="uq_jobs_idempotency"),
        sa.Index("ix_jobs_org_created", "organization_id", "created_at"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    template_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("templates.id", ondelete="SET NULL")
    )
    kind: Mapped[str] = mapped_column(sa.String(20), index=True)
    status: Mapped[str] = mapped_column(sa.String(20), default=JobStatus.PENDING.value, index=True)
    priority: Mapped[str] = mapped_column(sa.String(10), default=Priority.MEDIUM.value)
    title: Mapped[str] = mapped_column(sa.Text)
    # The kind's own request fields (goal, topic, analysis_types, parameters, ...).
    input: Mapped[dict[str, Any]] = mapped_column(default=dict)
    settings: Mapped[dict[str, Any]] = mapped_column(default=dict)
    result: Mapped[dict[str, Any] | None]
    error: Mapped[str | None] = mapped_column(sa.Text)
    progress: Mapped[int] = mapped_column(default=0)
    total_steps: Mapped[int] = mapped_column(default=0)
    completed_steps: Mapped[int] = mapped_column(default=0)
    # Last event sequence number handed out; events are numbered 1, 2, ... per job.
    event_seq: Mapped[int] = mapped_column(default=0)
    idempotency_key: Mapped[str | None] = mapped_column(sa.String(255))
    queue: Mapped[str | None] = mapped_column(sa.String(60))
    # Why a paused job is paused: "budget" or "emergency" (resume-all resumes the latter).
    paused_reason: Mapped[str | None] = mapped_column(sa.String(20))
    started_at: Mapped[datetime | None]
    finished_at: Mapped[datetime | None]


class JobPhase(IdMixin, Base):
    __tablename__ = "job_phases"
    __table_args__ = (sa.UniqueConstraint("job_id", "position", name="uq_job_phases_position"),)

    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    position: Mapped[int]
    code: Mapped[str] = mapped_column(sa.String(40))
    name: Mapped[str] = mapped_column(sa.String(120))
    status: Mapped[str] = mapped_column(sa.String(20), default=StepStatus.PENDING.value)
    output: Mapped[str | None] = mapped_column(sa.Text)
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(default=Decimal(0))
    execution_time_ms: Mapped[int | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]


class JobStep(IdMixin, Base):
    __tablename__ = "job_steps"
    __table_args__ = (
        sa.UniqueConstraint("phase_id", "position", name="uq_job_steps_position"),
        sa.Index("ix_job_steps_job", "job_id"),
        # The tools' full-text search over step outputs (PostgreSQL only; migration 0008).
        sa.Index(
            "ix_job_steps_output_fts",
            sa.text("to_tsvector('english'::regconfig, COALESCE(output, ''::text))"),
            postgresql_using="gin",
        ),
    )

    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    phase_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("job_phases.id", ondelete="CASCADE"))
    position: Mapped[int]
    name: Mapped[str] = mapped_column(sa.String(120))
    # What the step asks for: prompt template inputs, task_type for routing, etc.
    spec: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(sa.String(20), default=StepStatus.PENDING.value)
    celery_task_id: Mapped[str | None] = mapped_column(sa.String(64))
    attempts: Mapped[int] = mapped_column(default=0)
    # Set when a worker claims the step; a redelivered message may take over after it.
    lease_expires_at: Mapped[datetime | None]
    # "<host>:<pid>" of the worker process that claimed it: a dead local claimer's step
    # may be taken over at once instead of waiting for the lease.
    claimed_by: Mapped[str | None] = mapped_column(sa.String(200))
    output: Mapped[str | None] = mapped_column(sa.Text)
    provider: Mapped[str | None] = mapped_column(sa.String(60))
    model: Mapped[str | None] = mapped_column(sa.String(120))
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(default=Decimal(0))
    error: Mapped[str | None] = mapped_column(sa.Text)
    execution_time_ms: Mapped[int | None]
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]
    # Names of the tools the step's model called, in first-use order.
    tools_used: Mapped[list[Any]] = mapped_column(default=list)
    # An external task server's side of the step: integration, remote id, polls.
    external: Mapped[dict[str, Any] | None] = mapped_column()


class JobEvent(Base):
    """One row per transition or phase event: history, polling, SSE/WS resume point."""

    __tablename__ = "job_events"
    __table_args__ = (sa.UniqueConstraint("job_id", "seq", name="uq_job_events_seq"),)

    id: Mapped[int] = mapped_column(
        sa.BigInteger().with_variant(sa.Integer(), "sqlite"), primary_key=True, autoincrement=True
    )
    job_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("jobs.id", ondelete="CASCADE"))
    seq: Mapped[int]
    type: Mapped[str] = mapped_column(sa.String(60))
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class UsageRecord(IdMixin, Base):
    """The ledger: one row per provider call, with exact cost."""

    __tablename__ = "usage_records"
    __table_args__ = (sa.Index("ix_usage_org_created", "organization_id", "created_at"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    agent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("jobs.id", ondelete="SET NULL"), index=True
    )
    phase_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("job_phases.id", ondelete="SET NULL")
    )
    step_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("job_steps.id", ondelete="SET NULL")
    )
    # "<step id>:<attempt>:<call>": a redelivered step cannot write the same charge twice.
    call_key: Mapped[str | None] = mapped_column(sa.String(160), unique=True)
    provider: Mapped[str] = mapped_column(sa.String(60))
    model: Mapped[str] = mapped_column(sa.String(120))
    prompt_tokens: Mapped[int] = mapped_column(default=0)
    completion_tokens: Mapped[int] = mapped_column(default=0)
    cost: Mapped[Decimal] = mapped_column(default=Decimal(0))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
