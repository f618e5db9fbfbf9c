"""Idempotency-Key (Stripe, IETF draft "The Idempotency-Key HTTP Header Field").

A key is scoped to its organization and operation (method + route). The first request
with a key claims it (a row committed before the operation runs); its answer is stored
when it ends and replayed, status and body, to every retry within the key's lifetime
(BATON_IDEMPOTENCY_TTL_SECONDS, 24 h). The same key with a different request is a 422; a
retry while the first is still running is a 409. An answer that changed nothing (a
validation error, 429, 5xx) is not kept: the key is released. Expired rows are taken over lazily and purged by
beat.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import IdempotencyKey
from models.db import transaction
from orchestration.errors import Conflict, ValidationFailed

HEADER = "Idempotency-Key"
# Answers kept for replay: the operation ran (or was refused for good). Any other answer
# changed nothing and invites a corrected retry (400, 413, 415, 422) or a later one
# (429, 5xx): the key is released, as Stripe does for validation failures.
KEPT_ERRORS = {401, 402, 403, 404, 409, 410}


@dataclass(frozen=True)
class Claim:
    """This request owns the key: run the operation, then ``finish`` with its answer."""

    organization_id: uuid.UUID
    operation: str
    key: str
    fingerprint: str


@dataclass(frozen=True)
class Replay:
    status: int
    body: str | None
    headers: dict[str, str]


def _now() -> datetime:
    return datetime.now(UTC)


def begin(
    sessions: sessionmaker[Session],
    *,
    organization_id: uuid.UUID,
    operation: str,
    key: str,
    fingerprint: str,
) -> Claim | Replay:
    """Claim the key, or answer with the first request's stored answer.

    Raises ``ValidationFailed`` (422) when the key was used for a different request and
    ``Conflict`` (409) while the first request with it is still running.
    """
    settings = get_settings()
    now = _now()
    claim = Claim(organization_id, operation, key, fingerprint)
    fresh = {
        "fingerprint": fingerprint,
        "created_at": now,
        "locked_until": now + timedelta(seconds=settings.idempotency_lock_seconds),
        "expires_at": now + timedelta(seconds=settings.idempotency_ttl_seconds),
        "response_status": None,
        "response_body": None,
        "response_headers": None,
    }
    with transaction(sessions) as session:
        insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
        inserted = session.execute(
            insert(IdempotencyKey)
            .values(organization_id=organization_id, operation=operation, key=key, **fresh)
            .on_conflict_do_nothing()
            .returning(IdempotencyKey.key)
        ).first()
        if inserted is not None:
            return claim
        row = session.get(
            IdempotencyKey, (organization_id, operation, key), with_for_update=True,
            populate_existing=True,
        )  # fmt: skip
        if row is None:  # purged between the two statements: as good as in flight
            raise Conflict(
                "A request with this Idempotency-Key is being processed",
                [{"field": HEADER, "message": "in flight"}],
            )
        if row.expires_at <= now:
            # An expired key is a new key.
            for name, value in fresh.items():
                setattr(row, name, value)
            return claim
        if row.fingerprint != fingerprint:
            raise ValidationFailed(
                "This Idempotency-Key was already used with a different request",
                [{"field": HEADER, "message": "was used with a different request"}],
            )
        if row.response_status is None:
            if row.locked_until > now:
                raise Conflict(
                    "A request with this Idempotency-Key is still being processed; retry later",
                    [{"field": HEADER, "message": "in flight"}],
                )
            # The first request died without an answer (its lock ran out): run it again.
            row.locked_until = fresh["locked_until"]
            return claim
        return Replay(row.response_status, row.response_body, dict(row.response_headers or {}))


def finish(
    sessions: sessionmaker[Session],
    *,
    claim: Claim,
    status: int,
    body: str | None,
    headers: dict[str, Any],
) -> None:
    """Keep the answer for replays, or release the key when the answer invites a retry."""
    where = (
        IdempotencyKey.organization_id == claim.organization_id,
        IdempotencyKey.operation == claim.operation,
        IdempotencyKey.key == claim.key,
        IdempotencyKey.fingerprint == claim.fingerprint,
        IdempotencyKey.response_status.is_(None),
    )
    with transaction(sessions) as session:
        if body is None or (status >= 400 and status not in KEPT_ERRORS):
            session.execute(sa.delete(IdempotencyKey).where(*where))
        else:
            session.execute(
                sa.update(IdempotencyKey)
                .where(*where)
                .values(response_status=status, response_body=body, response_headers=headers)
            )


def purge_expired(sessions: sessionmaker[Session], *, batch: int = 5000) -> int:
    """Delete expired keys (beat, hourly); a key is also taken over lazily when it expires."""
    with transaction(sessions) as session:
        doomed = (
            sa.select(IdempotencyKey.organization_id, IdempotencyKey.operation, IdempotencyKey.key)
            .where(IdempotencyKey.expires_at <= _now())
            .limit(batch)
        )
        result = session.execute(
            sa.delete(IdempotencyKey).where(
                sa.tuple_(
                    IdempotencyKey.organization_id, IdempotencyKey.operation, IdempotencyKey.key
                ).in_(doomed)
            )
        )
        return result.rowcount or 0
