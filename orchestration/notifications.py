"""Notifications (seed 001): what the caller may see, and their own read state.

A notification with no user is for everyone in its organization; one with a user is for
that user only. Read state is per user (a receipt row), so marking an organization-wide
alert read does not hide it from the rest of the team.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from models import Notification, NotificationRead, utcnow
from models.db import transaction
from orchestration.errors import NotFound
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.principal import Principal

SEVERITIES = ("info", "warning", "critical")
# By seriousness, not alphabetically: "-severity" lists critical first.
SORTS = {
    "created_at": Notification.created_at,
    "severity": sa.case({s: i for i, s in enumerate(SEVERITIES)}, value=Notification.severity),
}


@dataclass
class NotificationFilters:
    is_read: bool | None = None
    severity: str | None = None


@dataclass
class NotificationView:
    notification: Notification
    read_at: datetime | None

    @property
    def is_read(self) -> bool:
        return self.read_at is not None


def _visible(principal: Principal) -> list[sa.ColumnElement[bool]]:
    return [
        Notification.organization_id == principal.organization_id,
        sa.or_(Notification.user_id.is_(None), Notification.user_id == principal.user_id),
    ]


def _read_by(principal: Principal) -> sa.Exists:
    return (
        sa.select(NotificationRead.notification_id)
        .where(
            NotificationRead.notification_id == Notification.id,
            NotificationRead.user_id == principal.user_id,
        )
        .exists()
    )


def _read_times(
    session: Session, principal: Principal, ids: list[uuid.UUID]
) -> dict[uuid.UUID, datetime]:
    if not ids:
        return {}
    return dict(
        session.execute(
            sa.select(NotificationRead.notification_id, NotificationRead.read_at).where(
                NotificationRead.user_id == principal.user_id,
                NotificationRead.notification_id.in_(ids),
            )
        ).all()
    )


def _insert_receipts(session: Session, rows: sa.Select) -> int:
    """INSERT ... SELECT of (notification_id, user_id, read_at); a receipt that already
    exists (a concurrent read) is kept as it is."""
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    return session.execute(
        insert(NotificationRead)
        .from_select(["notification_id", "user_id", "read_at"], rows)
        .on_conflict_do_nothing(index_elements=["notification_id", "user_id"])
    ).rowcount


def list_notifications(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: NotificationFilters,
    page: PageRequest,
) -> Page[NotificationView]:
    stmt = sa.select(Notification).where(*_visible(principal))
    if filters.severity:
        stmt = stmt.where(Notification.severity == filters.severity)
    if filters.is_read is not None:
        read = _read_by(principal)
        stmt = stmt.where(read if filters.is_read else ~read)
    stmt = apply_sort(stmt, page.sort, SORTS, Notification.created_at.desc()).order_by(
        Notification.created_at.desc(), Notification.id
    )
    with sessions() as session:
        result = paginate(session, stmt, page)
        read_at = _read_times(session, principal, [n.id for n in result.items])
    items = [NotificationView(n, read_at.get(n.id)) for n in result.items]
    return result.with_items(items)


def mark_read(
    sessions: sessionmaker[Session], *, principal: Principal, notification_id: uuid.UUID
) -> NotificationView:
    """Idempotent: reading a read notification keeps its first read time."""
    with transaction(sessions) as session:
        note = session.scalar(
            sa.select(Notification).where(Notification.id == notification_id, *_visible(principal))
        )
        if note is None:
            raise NotFound(f"Notification {notification_id} not found")
        _insert_receipts(
            session,
            sa.select(
                sa.literal(note.id, sa.Uuid()),
                sa.literal(principal.user_id, sa.Uuid()),
                sa.literal(utcnow(), Notification.created_at.type),
            ),
        )
        read_at = _read_times(session, principal, [note.id])
        return NotificationView(note, read_at.get(note.id))


def mark_all_read(sessions: sessionmaker[Session], *, principal: Principal) -> int:
    """How many of the caller's unread notifications this marked read."""
    with transaction(sessions) as session:
        return _insert_receipts(
            session,
            sa.select(
                Notification.id,
                sa.literal(principal.user_id, sa.Uuid()),
                sa.literal(utcnow(), Notification.created_at.type),
            ).where(*_visible(principal), ~_read_by(principal)),
        )
