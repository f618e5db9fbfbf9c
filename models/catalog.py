"""Projects, agents and phase templates: what jobs are submitted against."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin


class Project(IdMixin, TimestampMixin, Base):
    __tablename__ = "projects"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.Text)
    topic: Mapped[str | None] = mapped_column(sa.Text)
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    priority: Mapped[str] = mapped_column(sa.String(10), default="medium")
    metadata_: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)
    # Seed 001: the GitHub repository ("owner/repo") whose webhooks drive the project, and
    # the GitHub App installation Baton calls GitHub as.
    github_repo: Mapped[str | None] = mapped_column(sa.String(200), index=True)
    github_app_id: Mapped[str | None] = mapped_column(sa.String(60))
    github_installation_id: Mapped[str | None] = mapped_column(sa.String(60))


class Agent(IdMixin, TimestampMixin, Base):
    __tablename__ = "agents"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    project_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("projects.id", ondelete="SET NULL"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    type: Mapped[str] = mapped_column(sa.String(60), default="general")
    status: Mapped[str] = mapped_column(sa.String(20), default="active")
    # providers, model_preferences, max_retries, timeout_seconds, model_config, system_prompt
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    # Seed 002: a free-text description and the caller's own metadata.
    description: Mapped[str | None] = mapped_column(sa.Text)
    meta: Mapped[dict[str, Any]] = mapped_column("metadata", default=dict)


class Template(IdMixin, TimestampMixin, Base):
    __tablename__ = "templates"

    # NULL organization: a built-in template every organization can use.
    organization_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    description: Mapped[str | None] = mapped_column(sa.Text)
    category: Mapped[str] = mapped_column(sa.String(60), default="custom")
    is_public: Mapped[bool] = mapped_column(default=False)
    usage_count: Mapped[int] = mapped_column(default=0)
    template_data: Mapped[dict[str, Any]] = mapped_column(default=dict)
