"""An organization's provider integrations: its own OpenAI-compatible servers, or its own
key for a provider the operator configured. Keys are stored encrypted (Fernet)."""

from __future__ import annotations

import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin


class Integration(IdMixin, TimestampMixin, Base):
    __tablename__ = "integrations"
    __table_args__ = (sa.UniqueConstraint("organization_id", "name", name="uq_integrations_name"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    # The provider name jobs use ("openai" to bring a key for the built-in provider).
    name: Mapped[str] = mapped_column(sa.String(60))
    # NULL for a key-only integration of an operator provider.
    base_url: Mapped[str | None] = mapped_column(sa.String(500))
    models: Mapped[list[Any]] = mapped_column(default=list)
    timeout_seconds: Mapped[float | None]
    # {"model": {"input": "0.10", "output": "0.20"}}, USD per 1M tokens, as strings.
    prices: Mapped[dict[str, Any]] = mapped_column(default=dict)
    max_tokens_param: Mapped[str | None] = mapped_column(sa.String(40))
    # Fernet token; the plaintext key is never stored, logged or returned.
    encrypted_api_key: Mapped[str | None] = mapped_column(sa.Text)
    enabled: Mapped[bool] = mapped_column(default=True)
    # "provider" (an OpenAI-compatible server or key) or "task_server" (seed 000's Task
    # Master: an external executor steps submit to and poll).
    kind: Mapped[str] = mapped_column(sa.String(20), default="provider")
