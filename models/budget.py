"""Budget limits, their calendar windows, per-call reservations, and notifications."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, mapped_column

from models.base import Base, IdMixin, TimestampMixin, utcnow


class ScopeType(enum.StrEnum):
    GLOBAL = "global"  # every organization's spend (operators)
    ORGANIZATION = "organization"
    PROJECT = "project"
    AGENT = "agent"
    USER = "user"


class Period(enum.StrEnum):
    DAILY = "daily"
    WEEKLY = "weekly"
    MONTHLY = "monthly"
    TOTAL = "total"


class LimitAction(enum.StrEnum):
    WARN = "warn"
    PAUSE = "pause"
    BLOCK = "block"


class BudgetLimit(IdMixin, TimestampMixin, Base):
    __tablename__ = "budget_limits"

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE"), index=True
    )
    created_by_id: Mapped[uuid.UUID | None] = mapped_column(
        sa.ForeignKey("users.id", ondelete="SET NULL")
    )
    name: Mapped[str] = mapped_column(sa.String(200))
    scope_type: Mapped[str] = mapped_column(sa.String(20))
    scope_id: Mapped[uuid.UUID | None]
    amount_usd: Mapped[Decimal]
    period: Mapped[str] = mapped_column(sa.String(10))
    alert_threshold: Mapped[Decimal] = mapped_column(sa.Numeric(5, 4), default=Decimal("0.8"))
    action_on_exceed: Mapped[str] = mapped_column(sa.String(10), default=LimitAction.BLOCK.value)
    is_active: Mapped[bool] = mapped_column(default=True)
    # Deleting a limit hides it and stops it applying, but keeps its windows and holds:
    # a call that reserved on it before the delete still settles normally.
    deleted_at: Mapped[datetime | None]


class BudgetWindow(IdMixin, Base):
    """A limit's current calendar window (UTC). ``spent`` mirrors the ledger; ``reserved``
    is held by calls in flight. Both change only by single conditional UPDATEs."""

    __tablename__ = "budget_windows"
    __table_args__ = (
        sa.UniqueConstraint("limit_id", "window_start", name="uq_budget_windows_start"),
    )

    limit_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("budget_limits.id", ondelete="CASCADE")
    )
    window_start: Mapped[datetime]
    window_end: Mapped[datetime | None]
    spent: Mapped[Decimal] = mapped_column(default=Decimal(0))
    reserved: Mapped[Decimal] = mapped_column(default=Decimal(0))
    threshold_alerted_at: Mapped[datetime | None]
    exceeded_alerted_at: Mapped[datetime | None]


class BudgetReservation(IdMixin, Base):
    """Worst-case cost held on one window for one provider call until it settles."""

    __tablename__ = "budget_reservations"
    __table_args__ = (sa.Index("ix_budget_reservations_open", "status", "expires_at"),)

    window_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("budget_windows.id", ondelete="CASCADE")
    )
    call_key: Mapped[str] = mapped_column(sa.String(160), index=True)
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    amount: Mapped[Decimal]
    status: Mapped[str] = mapped_column(sa.String(10), default="held")  # held|settled|released
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Notification(IdMixin, Base):
    __tablename__ = "notifications"
    __table_args__ = (sa.Index("ix_notifications_org_created", "organization_id", "created_at"),)

    organization_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("organizations.id", ondelete="CASCADE")
    )
    user_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("users.id", ondelete="CASCADE"))
    type: Mapped[str] = mapped_column(sa.String(60))
    severity: Mapped[str] = mapped_column(sa.String(10), default="info")  # info|warning|critical
    title: Mapped[str] = mapped_column(sa.String(200))
    message: Mapped[str] = mapped_column(sa.Text)
    data: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class NotificationRead(Base):
    """One user's read receipt: an organization-wide notification is read per person, so
    one admin marking it read does not hide it from the rest of the team."""

    __tablename__ = "notification_reads"

    notification_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("notifications.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("users.id", ondelete="CASCADE"), primary_key=True, index=True
    )
    read_at: Mapped[datetime] = mapped_column(default=utcnow)
