"""Idempotency-Key records (issue 9): the first answer to a key, replayed to its retries."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, utcnow


class IdempotencyKey(Base):
    """One key of one organization for one operation (method + route).

    ``fingerprint`` is a hash of the request (path, query, body): the same key with another
    request is refused. While the first request runs, ``response_status`` is null and
    ``locked_until`` bounds how long a crashed request can hold the key.
    """

    __tablename__ = "idempotency_keys"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True
    )
    operation: Mapped[str] = mapped_column(sa.String(300), primary_key=True)
    key: Mapped[str] = mapped_column(sa.String(255), primary_key=True)
    fingerprint: Mapped[str] = mapped_column(sa.String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    locked_until: Mapped[datetime]
    expires_at: Mapped[datetime] = mapped_column(index=True)
    response_status: Mapped[int | None]
    response_body: Mapped[str | None] = mapped_column(sa.Text)
    response_headers: Mapped[dict[str, Any] | None]
