"""Outgoing webhooks (seeds 002, 003; DESIGN "Webhooks and GitHub").

- ``record_event(session, ...)`` writes one outbox row per matching active subscription in
  the caller's transaction: the event exists exactly when the change does. After that
  transaction commits, a delivery task is sent per row (a session ``after_commit`` hook);
  a message lost on the way is re-sent by beat from the outbox.
- ``deliver(sessions, delivery_id)`` claims the row (compare-and-set with a lease, so two
  messages for one row never both send), POSTs it signed per Standard Webhooks
  (``webhook-id`` = the row's id on every attempt, ``webhook-timestamp``,
  ``webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">``, one signature per
  valid secret during a rotation), through the egress guard, never following redirects.
  A 2xx marks it delivered (never sent again); anything else is retried with exponential
  backoff until ``BATON_WEBHOOK_MAX_ATTEMPTS``; a subscription whose deliveries keep
  failing is disabled with a notification.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import os
import secrets as pysecrets
import threading
import time
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy import event as sa_event
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    Job,
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
    utcnow,
)
from models.db import transaction
from orchestration import egress, secrets
from orchestration.errors import field_error
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.ownership import get_owned
from orchestration.principal import Principal
from orchestration.task_names import TaskName

log = logging.getLogger("baton.webhooks")

# Every event type Baton emits (and subscriptions may name). "*" subscribes to all.
EVENT_TYPES = (
    "job.completed",
    "job.failed",
    "job.cancelled",
    "agent.completed",
    "orchestration.started",
    "orchestration.completed",
    "orchestration.failed",
    "orchestration.cancelled",
    "budget.alert",
    "usage.quota_exceeded",
    "conversation.message",
    "emergency.pause",
    "emergency.resume",
    "subscription.expiring",
    "github.issue",
    "github.pull_request",
    "project.task.created",
    "project.task.completed",
    "webhook.test",
    "webhook.disabled",
)
ALL = "*"
PENDING, SENDING, DELIVERED, FAILED = "pending", "sending", "delivered", "failed"
_PENDING_KEY = "baton.webhook_deliveries"
# A countdown longer than this is not put on the broker (no long ETAs on Redis): the row
# waits in the outbox and beat sends it when due.
MAX_COUNTDOWN_SECONDS = 300.0
SORTS = {"created_at": WebhookSubscription.created_at, "name": WebhookSubscription.name}


class Outcome(StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"
    FAILED = "failed"
    SKIPPED = "skipped"


# -- secrets and signatures ------------------------------------------------------------


def new_secret() -> str:
    return "whsec_" + base64.b64encode(pysecrets.token_bytes(24)).decode()


def _key(secret: str) -> bytes:
    """Standard Webhooks keys are ``whsec_<base64>``; any other secret is used as its bytes."""
    if secret.startswith("whsec_"):
        try:
            return base64.b64decode(secret.removeprefix("whsec_"), validate=True)
        except ValueError:
            pass
    return secret.encode()


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signature_header(secrets_: list[str], msg_id: str, timestamp: int, body: bytes) -> str:
    return " ".join(sign(s, msg_id, timestamp, body) for s in secrets_)


def verify(secret: str, headers: dict[str, str], body: bytes, tolerance: int = 300) -> bool:
    """What a receiver does (used by tests and the benchmark's receiver)."""
    msg_id, timestamp = headers["webhook-id"], int(headers["webhook-timestamp"])
    if abs(time.time() - timestamp) > tolerance:
        return False
    expected = sign(secret, msg_id, timestamp, body)
    return any(
        hmac.compare_digest(expected, candidate)
        for candidate in headers["webhook-signature"].split()
    )


# -- the outbox (session in, never commit) ----------------------------------------------


def _payload(event_type: str, data: dict[str, Any], at: datetime) -> dict[str, Any]:
    return {"type": event_type, "timestamp": at.isoformat(), "data": data}


def _wants(subscription: WebhookSubscription, event_type: str) -> bool:
    types = subscription.event_types or []
    return ALL in types or event_type in types


def record_event(
    session: Session,
    *,
    organization_id: uuid.UUID,
    event_type: str,
    data: dict[str, Any],
    subscription_id: uuid.UUID | None = None,
) -> list[uuid.UUID]:
    """Outbox rows for every active subscription of the organization that wants the event
    (or just ``subscription_id``: a ping). Sent after the caller's transaction commits."""
    stmt = sa.select(WebhookSubscription).where(
        WebhookSubscription.organization_id == organization_id,
        WebhookSubscription.is_active.is_(True),
    )
    if subscription_id is not None:
        stmt = stmt.where(WebhookSubscription.id == subscription_id)
    subscribers = [
        s for s in session.scalars(stmt) if subscription_id is not None or _wants(s, event_type)
    ]
    if not subscribers:
        return []
    now = utcnow()
    payload = _payload(event_type, _jsonable(data), now)
    rows = [
        {
            "id": uuid.uuid4(),
            "subscription_id": s.id,
            "organization_id": organization_id,
            "event_type": event_type,
            "payload": payload,
            "status": PENDING,
            "attempts": 0,
            "next_attempt_at": now,
            "created_at": now,
        }
        for s in subscribers
    ]
    session.execute(sa.insert(WebhookDelivery), rows)
    ids = [row["id"] for row in rows]
    session.info.setdefault(_PENDING_KEY, []).extend(ids)
    return ids


def transition_columns() -> list[Any]:
    """What ``record_job_transition`` reads of the job, for the RETURNING of the
    transition's own UPDATE on ``jobs`` (PostgreSQL): no read of the job after it."""
    return [Job.organization_id, Job.kind, Job.agent_id, Job.project_id, Job.error, _listened()]


def _listened() -> Any:
    return (
        sa.select(WebhookSubscription.id)
        .where(
            WebhookSubscription.organization_id == Job.organization_id,
            WebhookSubscription.is_active.is_(True),
        )
        .exists()
    )


def record_job_transition(
    session: Session, *, job_id: uuid.UUID, status: str, known: Any = None
) -> None:
    """Called by the state machine when a job starts or ends (same transaction).
    ``known``: the row of ``transition_columns()`` the transition's UPDATE returned."""
    job = known
    if job is None:
        job = session.execute(
            sa.select(*transition_columns()).where(Job.id == job_id)
        ).one_or_none()
    if job is None or not job[-1]:
        return  # the common case: nobody listens; nothing more (and no statement if known)
    organization_id, kind, agent_id, project_id, error, _ = job
    data = {
        "job_id": str(job_id),
        "kind": kind,
        "status": status,
        "agent_id": str(agent_id) if agent_id else None,
        "project_id": str(project_id) if project_id else None,
    }
    if status == "failed":
        data["error"] = error
    types = [] if status == "running" else [f"job.{status}"]
    if kind == "orchestration":
        types.append(f"orchestration.{'started' if status == 'running' else status}")
    if kind == "agent_run" and status == "completed":
        types.append("agent.completed")
    for event_type in types:
        record_event(session, organization_id=organization_id, event_type=event_type, data=data)


def _jsonable(value: Any) -> Any:
    return json.loads(json.dumps(value, default=str))


@sa_event.listens_for(Session, "after_commit")
def _send_after_commit(session: Session) -> None:
    ids = session.info.pop(_PENDING_KEY, None)
    if ids:
        send_deliveries(ids)


@sa_event.listens_for(Session, "after_rollback")
def _forget_after_rollback(session: Session) -> None:
    session.info.pop(_PENDING_KEY, None)


def queue_name() -> str:
    """Deliveries have their own queue: a slow receiver never holds up job steps."""
    from orchestration.canvas import webhooks_queue

    return webhooks_queue()


def send_deliveries(ids: list[uuid.UUID], countdown: float | None = None) -> None:
    from baton.celery_app import app

    try:
        for delivery_id in ids:
            app.send_task(
                str(TaskName.DELIVER_WEBHOOK),
                args=[str(delivery_id)],
                queue=queue_name(),
                countdown=countdown,
            )
    except Exception:  # the broker is down: the outbox row stays, beat re-sends it
        log.exception("could not send webhook deliveries; beat will re-send them")


# -- delivery --------------------------------------------------------------------------


@dataclass
class DeliveryResult:
    outcome: Outcome
    countdown: float = 0.0
    status_code: int | None = None


@dataclass
class _Claimed:
    delivery_id: uuid.UUID
    subscription_id: uuid.UUID
    url: str
    body: bytes
    secrets: list[str]
    attempt: int
    extra: dict[str, Any] = field(default_factory=dict)


_clients: dict[int, httpx.Client] = {}
_clients_lock = threading.Lock()


def _client() -> httpx.Client:
    """One pinned client per process (a forked worker child builds its own)."""
    pid = os.getpid()
    with _clients_lock:
        client = _clients.get(pid)
        if client is None:
            _clients.clear()
            client = _clients[pid] = egress.pinned_client(
                timeout=get_settings().webhook_timeout_seconds
            )
        return client


def backoff_seconds(attempts: int) -> float:
    s = get_settings()
    return min(
        s.webhook_backoff_seconds * (2 ** max(attempts - 1, 0)), s.webhook_backoff_max_seconds
    )


def _signing_secrets(
    encrypted: str, previous: str | None, previous_expires: datetime | None, now: datetime
) -> list[str]:
    out = [secrets.decrypt(encrypted)]
    if previous and previous_expires and previous_expires > now:
        out.append(secrets.decrypt(previous))
    return out


_SUB = WebhookSubscription.__table__
_DELIVERY = WebhookDelivery.__table__
_ATTEMPT = WebhookAttempt.__table__


# Built once (bind parameters): a delivery runs these two statements, and building them
# per call cost more CPU than the rest of the bookkeeping.
_CLAIM = (
    sa.update(_DELIVERY)
    .where(
        _DELIVERY.c.id == sa.bindparam("delivery_id"),
        _SUB.c.id == _DELIVERY.c.subscription_id,
        _SUB.c.is_active.is_(True),
        sa.or_(
            _DELIVERY.c.status == PENDING,
            sa.and_(
                _DELIVERY.c.status == SENDING,
                _DELIVERY.c.lease_until < sa.bindparam("now", type_=_DELIVERY.c.lease_until.type),
            ),
        ),
    )
    .values(
        status=SENDING,
        lease_until=sa.bindparam("lease_until", type_=_DELIVERY.c.lease_until.type),
        attempts=_DELIVERY.c.attempts + 1,
    )
    .returning(
        _DELIVERY.c.subscription_id,
        _DELIVERY.c.payload,
        _DELIVERY.c.attempts,
        _SUB.c.url,
        _SUB.c.encrypted_secret,
        _SUB.c.encrypted_previous_secret,
        _SUB.c.previous_secret_expires_at,
        _SUB.c.consecutive_failures,
        _SUB.c.last_triggered_at,
    )
)
_DELIVERED = (
    sa.update(_DELIVERY)
    .where(_DELIVERY.c.id == sa.bindparam("delivery_id"), _DELIVERY.c.status == SENDING)
    .values(
        status=DELIVERED,
        delivered_at=sa.bindparam("now", type_=_DELIVERY.c.delivered_at.type),
        last_error=None,
        lease_until=None,
        last_status_code=sa.bindparam("status_code", type_=sa.Integer()),
    )
)
_ATTEMPT_COLUMNS = [
    "id", "delivery_id", "subscription_id", "attempt", "status_code", "latency_ms", "error",
    "created_at",
]  # fmt: skip
_updated = _DELIVERED.returning(_DELIVERY.c.id).cte("updated")
# The attempt row is inserted only if the update matched (this task still held the row).
_DELIVERED_WITH_ATTEMPT = sa.insert(_ATTEMPT).from_select(
    _ATTEMPT_COLUMNS,
    sa.select(
        *(
            _updated.c.id
            if name == "delivery_id"
            else sa.bindparam(f"a_{name}", type_=_ATTEMPT.c[name].type)
            for name in _ATTEMPT_COLUMNS
        )
    ),
    include_defaults=False,
)


def _claim(session: Session, delivery_id: uuid.UUID) -> _Claimed | None:
    """One statement: take the row (pending, or sending past its lease) if its
    subscription is active, and read what the POST needs."""
    now = utcnow()
    lease = timedelta(seconds=get_settings().webhook_timeout_seconds + 60)
    row = session.execute(
        _CLAIM, {"delivery_id": delivery_id, "now": now, "lease_until": now + lease}
    ).one_or_none()
    if row is None:
        # Delivered, failed, held by another task, or its subscription is disabled.
        session.execute(
            sa.update(_DELIVERY)
            .where(
                _DELIVERY.c.id == delivery_id,
                _DELIVERY.c.status == PENDING,
                _DELIVERY.c.subscription_id.in_(
                    sa.select(_SUB.c.id).where(_SUB.c.is_active.is_(False))
                ),
            )
            .values(status=FAILED, lease_until=None, last_error="the subscription is disabled")
        )
        return None
    body = json.dumps(row.payload, separators=(",", ":")).encode()
    try:
        signing = _signing_secrets(
            row.encrypted_secret, row.encrypted_previous_secret, row.previous_secret_expires_at, now
        )
    except secrets.SecretUnreadable as exc:
        # No key decrypts it (BATON_ENCRYPTION_KEY changed): retrying cannot help.
        log.error("webhook subscription %s: %s", row.subscription_id, exc)
        session.execute(
            sa.update(_DELIVERY)
            .where(_DELIVERY.c.id == delivery_id)
            .values(status=FAILED, lease_until=None, last_error=f"signing secret unreadable: {exc}")
        )
        return None
    # The subscription row is shared by every delivery: it is written on success only
    # when something changes (a failure streak ends, or last_triggered_at is a second old).
    touch = row.consecutive_failures != 0 or (
        row.last_triggered_at is None or now - row.last_triggered_at > timedelta(seconds=1)
    )
    return _Claimed(
        delivery_id, row.subscription_id, row.url, body, signing, row.attempts,
        extra={"touch_subscription": touch},
    )  # fmt: skip


def _post(claimed: _Claimed) -> tuple[int | None, str | None, float]:
    msg_id = str(claimed.delivery_id)
    timestamp = int(time.time())
    headers = {
        "content-type": "application/json",
        "user-agent": "Baton-Webhooks/1",
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": signature_header(claimed.secrets, msg_id, timestamp, claimed.body),
    }
    started = time.perf_counter()
    try:
        response = _client().post(claimed.url, content=claimed.body, headers=headers)
    except httpx.HTTPError as exc:
        return None, f"{type(exc).__name__}: {exc}"[:500], (time.perf_counter() - started) * 1000
    latency = (time.perf_counter() - started) * 1000
    if 200 <= response.status_code < 300:
        return response.status_code, None, latency
    error = (
        f"redirect to {response.headers.get('location', '?')} not followed"
        if 300 <= response.status_code < 400
        else f"HTTP {response.status_code}"
    )
    return response.status_code, error[:500], latency


def deliver(sessions: sessionmaker[Session], *, delivery_id: uuid.UUID) -> DeliveryResult:
    with transaction(sessions) as session:
        claimed = _claim(session, delivery_id)
    if claimed is None:
        return DeliveryResult(Outcome.SKIPPED)
    status_code, error, latency = _post(claimed)
    with transaction(sessions) as session:
        return _record(session, claimed, status_code, error, latency)


def _record(
    session: Session,
    claimed: _Claimed,
    status_code: int | None,
    error: str | None,
    latency: float,
) -> DeliveryResult:
    settings = get_settings()
    now = utcnow()
    if error is not None:
        session.execute(
            sa.insert(_ATTEMPT).values(_attempt_row(claimed, status_code, latency, error, now))
        )
    values: dict[str, Any] = {"lease_until": None, "last_status_code": status_code}
    subscription = sa.update(WebhookSubscription).where(
        WebhookSubscription.id == claimed.subscription_id
    )
    if error is None:
        _mark_delivered(session, claimed, status_code, latency, now)
        if claimed.extra.get("touch_subscription"):
            session.execute(subscription.values(consecutive_failures=0, last_triggered_at=now))
        return DeliveryResult(Outcome.DELIVERED, status_code=status_code)
    if claimed.attempt < settings.webhook_max_attempts:
        wait = backoff_seconds(claimed.attempt)
        session.execute(
            sa.update(WebhookDelivery)
            .where(WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.status == SENDING)
            .values(
                status=PENDING,
                next_attempt_at=now + timedelta(seconds=wait),
                last_error=error,
                **values,
            )
        )
        return DeliveryResult(Outcome.RETRY, countdown=wait, status_code=status_code)
    session.execute(
        sa.update(WebhookDelivery)
        .where(WebhookDelivery.id == claimed.delivery_id, WebhookDelivery.status == SENDING)
        .values(status=FAILED, last_error=error, **values)
    )
    failures = session.execute(
        subscription.values(
            consecutive_failures=WebhookSubscription.consecutive_failures + 1,
            last_triggered_at=now,
        ).returning(WebhookSubscription.consecutive_failures)
    ).scalar_one()
    if failures >= settings.webhook_disable_after_failures:
        _disable(session, claimed.subscription_id, failures, error)
    return DeliveryResult(Outcome.FAILED, status_code=status_code)


def _attempt_row(
    claimed: _Claimed, status_code: int | None, latency: float, error: str | None, now: datetime
) -> dict[str, Any]:
    return {
        "id": uuid.uuid4(),
        "delivery_id": claimed.delivery_id,
        "subscription_id": claimed.subscription_id,
        "attempt": claimed.attempt,
        "status_code": status_code,
        "latency_ms": round(latency, 3),
        "error": error,
        "created_at": now,
    }


def _mark_delivered(
    session: Session, claimed: _Claimed, status_code: int | None, latency: float, now: datetime
) -> None:
    """The status change and its attempt row; on PostgreSQL one statement (a CTE), and the
    attempt is written only if this task still held the row."""
    params = {"delivery_id": claimed.delivery_id, "now": now, "status_code": status_code}
    attempt = _attempt_row(claimed, status_code, latency, None, now)
    if session.bind.dialect.name != "postgresql":
        session.execute(_DELIVERED, params)
        session.execute(sa.insert(_ATTEMPT).values(attempt))
        return
    session.execute(
        _DELIVERED_WITH_ATTEMPT,
        {**params, **{f"a_{k}": v for k, v in attempt.items() if k != "delivery_id"}},
    )


def _disable(
    session: Session, subscription_id: uuid.UUID, failures: int, error: str | None
) -> None:
    reason = f"disabled after {failures} failed deliveries in a row (last: {error})"
    sub = session.execute(
        sa.update(WebhookSubscription)
        .where(WebhookSubscription.id == subscription_id, WebhookSubscription.is_active.is_(True))
        .values(is_active=False, disabled_reason=reason, updated_at=utcnow())
        .returning(WebhookSubscription.organization_id, WebhookSubscription.url)
    ).one_or_none()
    if sub is None:
        return
    session.add(
        Notification(
            organization_id=sub.organization_id,
            type="webhook_disabled",
            severity="warning",
            title="Webhook subscription disabled",
            message=f"Deliveries to {sub.url} kept failing; the subscription was {reason}.",
            data={"webhook_id": str(subscription_id), "url": sub.url, "failures": failures},
        )
    )
    log.warning("webhook subscription %s %s", subscription_id, reason)


def due_deliveries(
    sessions: sessionmaker[Session], *, lost_after: timedelta, limit: int = 500
) -> list[uuid.UUID]:
    """Outbox rows whose message must have been lost: pending past their due time by
    ``lost_after`` (or never sent: a long backoff), or sending past their lease."""
    now = utcnow()
    with sessions() as session:
        return list(
            session.scalars(
                sa.select(WebhookDelivery.id)
                .where(
                    sa.or_(
                        sa.and_(
                            WebhookDelivery.status == PENDING,
                            WebhookDelivery.next_attempt_at <= now - lost_after,
                        ),
                        sa.and_(
                            WebhookDelivery.status == SENDING, WebhookDelivery.lease_until < now
                        ),
                    )
                )
                .order_by(WebhookDelivery.next_attempt_at)
                .limit(limit)
            )
        )


def resend_lost(sessions: sessionmaker[Session], *, lost_after: timedelta) -> int:
    ids = due_deliveries(sessions, lost_after=lost_after)
    send_deliveries(ids)
    return len(ids)


# -- subscriptions (admins and managers) -------------------------------------------------


@dataclass
class SubscriptionView:
    subscription: WebhookSubscription
    secret: str | None = None  # only when just created or rotated


def _owned(session: Session, principal: Principal, webhook_id: uuid.UUID) -> WebhookSubscription:
    return get_owned(
        session, WebhookSubscription, webhook_id, organization_id=principal.organization_id,
        what="webhook",
    )  # fmt: skip


def _event_types(data: dict[str, Any]) -> list[str] | None:
    """Seed 002 says ``event_types``, seed 003 ``events``: one stored list."""
    types = data.get("event_types", data.get("events"))
    if types is None:
        return None
    name = "event_types" if "event_types" in data else "events"
    unknown = [t for t in types if t != ALL and t not in EVENT_TYPES]
    if unknown:
        raise field_error(name, f"unknown event types {unknown}; known: {list(EVENT_TYPES)}")
    return list(dict.fromkeys(types))


def create_subscription(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> SubscriptionView:
    egress.check_url_field(data["url"], field_name="url")
    types = _event_types(data)
    if not types:
        raise field_error("event_types", "name at least one event type (or '*')")
    secret = data.get("secret") or data.get("secret_key") or new_secret()
    row = WebhookSubscription(
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        name=data.get("name"),
        description=data.get("description"),
        url=data["url"],
        event_types=types,
        encrypted_secret=secrets.encrypt(secret, field_name="secret"),
        is_active=data.get("is_active", True),
        consecutive_failures=0,
    )
    with transaction(sessions) as session:
        session.add(row)
        session.flush()
    return SubscriptionView(row, secret)


def update_subscription(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    webhook_id: uuid.UUID,
    changes: dict[str, Any],
) -> SubscriptionView:
    if "url" in changes:
        egress.check_url_field(changes["url"], field_name="url")
    types = _event_types(changes)
    with transaction(sessions) as session:
        row = _owned(session, principal, webhook_id)
        for key in ("name", "description", "url"):
            if key in changes:
                setattr(row, key, changes[key])
        if types is not None:
            if not types:
                raise field_error("event_types", "name at least one event type (or '*')")
            row.event_types = types
        if "is_active" in changes:
            if changes["is_active"] and not row.is_active:
                row.consecutive_failures, row.disabled_reason = 0, None
            row.is_active = changes["is_active"]
        row.updated_at = utcnow()
        session.flush()
        return SubscriptionView(row)


def rotate_secret(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    webhook_id: uuid.UUID,
    secret: str | None = None,
    grace_hours: float | None = None,
) -> SubscriptionView:
    """The new secret signs from now on; the old one also signs until the grace ends."""
    grace = get_settings().webhook_secret_grace_hours if grace_hours is None else grace_hours
    new = secret or new_secret()
    with transaction(sessions) as session:
        row = _owned(session, principal, webhook_id)
        row.encrypted_previous_secret = row.encrypted_secret if grace > 0 else None
        row.previous_secret_expires_at = utcnow() + timedelta(hours=grace) if grace > 0 else None
        row.encrypted_secret = secrets.encrypt(new, field_name="secret")
        row.updated_at = utcnow()
        session.flush()
        return SubscriptionView(row, new)


def delete_subscription(
    sessions: sessionmaker[Session], *, principal: Principal, webhook_id: uuid.UUID
) -> None:
    with transaction(sessions) as session:
        session.delete(_owned(session, principal, webhook_id))


def get_subscription(
    sessions: sessionmaker[Session], *, principal: Principal, webhook_id: uuid.UUID
) -> SubscriptionView:
    with sessions() as session:
        return SubscriptionView(_owned(session, principal, webhook_id))


def list_subscriptions(
    sessions: sessionmaker[Session], *, principal: Principal, page: PageRequest
) -> Page[SubscriptionView]:
    stmt = sa.select(WebhookSubscription).where(
        WebhookSubscription.organization_id == principal.organization_id
    )
    stmt = apply_sort(stmt, page.sort, SORTS, WebhookSubscription.created_at.desc()).order_by(
        WebhookSubscription.id
    )
    with sessions() as session:
        result = paginate(session, stmt, page)
    result.items = [SubscriptionView(row) for row in result.items]
    return result


def ping(
    sessions: sessionmaker[Session], *, principal: Principal, webhook_id: uuid.UUID
) -> WebhookDelivery:
    """A ``webhook.test`` delivery to this subscription only, sent like any other."""
    with transaction(sessions) as session:
        row = _owned(session, principal, webhook_id)
        if not row.is_active:
            raise field_error("is_active", "the subscription is disabled; enable it first")
        (delivery_id,) = record_event(
            session,
            organization_id=principal.organization_id,
            event_type="webhook.test",
            data={"webhook_id": str(webhook_id), "message": "Test delivery from Baton"},
            subscription_id=row.id,
        )
        return session.get(WebhookDelivery, delivery_id)


@dataclass
class DeliveryView:
    delivery: WebhookDelivery
    attempts: list[WebhookAttempt]


def list_deliveries(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    webhook_id: uuid.UUID,
    page: PageRequest,
) -> Page[DeliveryView]:
    """The delivery log: each event sent, with every attempt's status code and latency."""
    with sessions() as session:
        _owned(session, principal, webhook_id)
        stmt = (
            sa.select(WebhookDelivery)
            .where(WebhookDelivery.subscription_id == webhook_id)
            .order_by(WebhookDelivery.created_at.desc(), WebhookDelivery.id)
        )
        result = paginate(session, stmt, page)
        ids = [d.id for d in result.items]
        attempts: dict[uuid.UUID, list[WebhookAttempt]] = {i: [] for i in ids}
        for attempt in session.scalars(
            sa.select(WebhookAttempt)
            .where(WebhookAttempt.delivery_id.in_(ids))
            .order_by(WebhookAttempt.attempt)
        ):
            attempts[attempt.delivery_id].append(attempt)
    result.items = [DeliveryView(d, attempts[d.id]) for d in result.items]
    return result
