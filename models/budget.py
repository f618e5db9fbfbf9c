"""Budget limits, their calendar windows, per-call reservations, and notifications."""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Mapped, column_property, mapped_column

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
    is held by calls in flight. Both change only by single conditional UPDATEs.

    The columns may lag by settlements deferred on the window (``BudgetReservation``
    status ``deferred``: settled, not yet applied; the next reservation on the window
    applies them). The ``applied_*`` attributes are the columns as stored; ``spent`` and
    ``reserved`` (below the class) are the true values, the deferred ones folded in:
    every ORM read sees those."""

    __tablename__ = "budget_windows"
    __table_args__ = (
        sa.UniqueConstraint("limit_id", "window_start", name="uq_budget_windows_start"),
    )

    limit_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("budget_limits.id", ondelete="CASCADE")
    )
    window_start: Mapped[datetime]
    window_end: Mapped[datetime | None]
    applied_spent: Mapped[Decimal] = mapped_column("spent", default=Decimal(0))
    applied_reserved: Mapped[Decimal] = mapped_column("reserved", default=Decimal(0))
    threshold_alerted_at: Mapped[datetime | None]
    exceeded_alerted_at: Mapped[datetime | None]


class BudgetReservation(IdMixin, Base):
    """Worst-case cost held on one window for one provider call until it settles."""

    __tablename__ = "budget_reservations"
    __table_args__ = (
        sa.Index("ix_budget_reservations_open", "status", "expires_at"),
        # A call's holds by key and status, in one index: with the key alone, the planner
        # ANDed it with ``_open``'s bitmap of every 'held' entry, dead ones included (a
        # bitmap scan never marks an entry dead), so each settlement read more of them
        # the more calls had settled since the last VACUUM.
        sa.Index("ix_budget_reservations_call_key_status", "call_key", "status"),
        # What the next reservation on a window folds in (and every read adds): small.
        sa.Index(
            "ix_budget_reservations_deferred",
            "window_id",
            postgresql_where=sa.text("status = 'deferred'"),
            sqlite_where=sa.text("status = 'deferred'"),
        ),
    )

    window_id: Mapped[uuid.UUID] = mapped_column(
        sa.ForeignKey("budget_windows.id", ondelete="CASCADE")
    )
    call_key: Mapped[str] = mapped_column(sa.String(160))
    job_id: Mapped[uuid.UUID | None] = mapped_column(sa.ForeignKey("jobs.id", ondelete="SET NULL"))
    amount: Mapped[Decimal]
    # held | deferred (settled, the window not charged yet) | settled | released
    status: Mapped[str] = mapped_column(sa.String(10), default="held")
    settled_amount: Mapped[Decimal | None]  # the actual cost, once settled
    expires_at: Mapped[datetime]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


# Written into the SQL, not bound: a prepared statement's generic plan can use the partial
# index ``ix_budget_reservations_deferred`` only with the status as a literal.
DEFERRED = sa.literal_column("'deferred'", sa.String)


def deferred_sums(window_id: Any) -> tuple[Any, Any]:
    """The actual cost and the held amount of the settlements deferred on ``window_id``
    (a column or parameter): what a window's columns do not count yet. The one
    definition every read of a window's true totals uses."""
    holds = BudgetReservation.__table__
    deferred = sa.and_(holds.c.window_id == window_id, holds.c.status == DEFERRED)

    def total(column: Any) -> Any:
        return sa.func.coalesce(sa.select(sa.func.sum(column)).where(deferred).scalar_subquery(), 0)

    return total(holds.c.settled_amount), total(holds.c.amount)


_windows = BudgetWindow.__table__
_deferred_spent, _deferred_held = deferred_sums(_windows.c.id)
BudgetWindow.spent = column_property(_windows.c.spent + _deferred_spent)
BudgetWindow.reserved = column_property(_windows.c.reserved - _deferred_held)


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
