"""Seed 001's GitHub side of a project: issues and pull requests mirrored from GitHub's
webhooks, the deliveries already processed, and the project's task board."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin, utcnow


class GitHubDelivery(Base):
    """``X-GitHub-Delivery`` ids already handled: a replay is answered, not processed."""

    __tablename__ = "github_deliveries"

    delivery_id: Mapped[str] = mapped_column(sa.String(100), primary_key=True)
    event: Mapped[str] = mapped_column(sa.String(60))
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="SET NULL")
    )
    received_at: Mapped[datetime] = mapped_column(default=utcnow)


class ProjectIssue(IdMixin, TimestampMixin, Base):
    __tablename__ = "project_issues"
    __table_args__ = (sa.UniqueConstraint("project_id", "number", name="uq_project_issues_number"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int]
    title: Mapped[str] = mapped_column(sa.String(500))
    body: Mapped[str | None] = mapped_column(sa.Text)
    state: Mapped[str] = mapped_column(sa.String(10), default="open")  # open|closed
    labels: Mapped[list[Any]] = mapped_column(default=list)
    author: Mapped[str | None] = mapped_column(sa.String(100))
    html_url: Mapped[str | None] = mapped_column(sa.String(500))
    comments: Mapped[list[Any]] = mapped_column(default=list)  # [{id, author, body, at}]


class ProjectPullRequest(IdMixin, TimestampMixin, Base):
    __tablename__ = "project_pull_requests"
    __table_args__ = (
        sa.UniqueConstraint("project_id", "number", name="uq_project_pull_requests_number"),
    )

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    number: Mapped[int]
    title: Mapped[str] = mapped_column(sa.String(500))
    body: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(10), default="open")  # open|closed|merged
    review_state: Mapped[str | None] = mapped_column(sa.String(30))
    head_ref: Mapped[str | None] = mapped_column(sa.String(255))
    head_sha: Mapped[str | None] = mapped_column(sa.String(64))
    base_ref: Mapped[str | None] = mapped_column(sa.String(255))
    author: Mapped[str | None] = mapped_column(sa.String(100))
    html_url: Mapped[str | None] = mapped_column(sa.String(500))


class ProjectTask(IdMixin, TimestampMixin, Base):
    """Seed 001's task board; ``job_id`` is the engine job doing the agent's work."""

    __tablename__ = "project_tasks"
    __table_args__ = (sa.Index("ix_project_tasks_project", "project_id", "created_at"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID] = mapped_column(sa.ForeignKey("projects.id", ondelete="CASCADE"))
    issue_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("project_issues.id", ondelete="SET NULL"), index=True
    )
    pull_request_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("project_pull_requests.id", ondelete="SET NULL")
    )
    assigned_to_agent_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("agents.id", ondelete="SET NULL"), index=True
    )
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    title: Mapped[str] = mapped_column(sa.String(500))
    description: Mapped[str | None] = mapped_column(sa.Text)
    priority: Mapped[str] = mapped_column(sa.String(10), default="medium")
    # pending|in_progress|testing|review|completed|failed
    status: Mapped[str] = mapped_column(sa.String(20), default="pending")
    definition_of_done: Mapped[str | None] = mapped_column(sa.Text)
    completed_at: Mapped[datetime | None]
