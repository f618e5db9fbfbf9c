"""Webhook delivery: Standard Webhooks signatures checked by a local receiver over TCP,
one webhook-id across retries, at most one successful delivery, no redirects, no SSRF at
send, repeated failure disables; end to end with real workers for job events."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import (
    Notification,
    WebhookAttempt,
    WebhookDelivery,
    WebhookSubscription,
)
from models.db import session_factory, transaction
from orchestration import secrets, webhooks
from orchestration.principal import Principal
from orchestration.webhooks import Outcome
from tests import factories
from tests.helpers import live_tenant, wait_terminal
from tests.local_http import LocalServer, Reply

SECRET = "whsec_" + "c2VjcmV0LXNlY3JldC1zZWNyZXQtc2VjcmV0"


@pytest.fixture
def receiver():
    servers: list[LocalServer] = []

    def start(handler=None) -> LocalServer:
        servers.append(LocalServer(handler))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def subscribe(session, org_id, url, events=("*",), secret=SECRET) -> WebhookSubscription:
    row = WebhookSubscription(
        organization_id=org_id,
        url=url,
        event_types=list(events),
        encrypted_secret=secrets.encrypt(secret),
        is_active=True,
        consecutive_failures=0,
    )
    session.add(row)
    session.flush()
    return row


def emit(sessions, org_id, event_type="job.completed", **kwargs) -> list[uuid.UUID]:
    with transaction(sessions) as session:
        return webhooks.record_event(
            session, organization_id=org_id, event_type=event_type, data={"n": 1}, **kwargs
        )


@pytest.fixture
def org(db):
    row = factories.organization(db)
    db.commit()
    return row


def test_a_delivery_is_signed_and_sent_once(sessions, db, org, receiver):
    server = receiver()
    subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    assert webhooks.deliver(sessions, delivery_id=delivery_id).outcome is Outcome.DELIVERED
    (request,) = server.received
    assert request.headers["webhook-id"] == str(delivery_id)
    assert webhooks.verify(SECRET, request.headers, request.body)
    assert not webhooks.verify("whsec_" + "b3RoZXI=", request.headers, request.body)
    assert request.json()["type"] == "job.completed" and request.json()["data"] == {"n": 1}
    # A second message for the same row (a redelivery) sends nothing.
    assert webhooks.deliver(sessions, delivery_id=delivery_id).outcome is Outcome.SKIPPED
    assert len(server.received) == 1
    row = db.get(WebhookDelivery, delivery_id)
    db.refresh(row)
    assert (row.status, row.attempts, row.last_status_code) == ("delivered", 1, 200)


def test_only_subscribers_of_the_type_get_a_row(sessions, db, org, receiver):
    server = receiver()
    subscribe(db, org.id, f"{server.url}/a", events=["job.failed"])
    wanted = subscribe(db, org.id, f"{server.url}/b", events=["job.completed"])
    db.commit()
    ids = emit(sessions, org.id, "job.completed")
    assert [db.get(WebhookDelivery, i).subscription_id for i in ids] == [wanted.id]


def test_failures_retry_under_the_same_id_with_backoff(sessions, db, org, receiver):
    answers = iter([500, 503, 200])
    server = receiver(lambda _r: Reply(next(answers)))
    subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    first = webhooks.deliver(sessions, delivery_id=delivery_id)
    second = webhooks.deliver(sessions, delivery_id=delivery_id)
    assert (first.outcome, second.outcome) == (Outcome.RETRY, Outcome.RETRY)
    assert second.countdown == 2 * first.countdown  # exponential
    assert webhooks.deliver(sessions, delivery_id=delivery_id).outcome is Outcome.DELIVERED
    assert {r.headers["webhook-id"] for r in server.received} == {str(delivery_id)}
    assert all(webhooks.verify(SECRET, r.headers, r.body) for r in server.received)
    attempts = db.scalars(
        sa.select(WebhookAttempt).filter_by(delivery_id=delivery_id).order_by("attempt")
    ).all()
    assert [(a.attempt, a.status_code) for a in attempts] == [(1, 500), (2, 503), (3, 200)]
    assert all(a.latency_ms >= 0 for a in attempts)


def test_a_redirect_is_a_failed_attempt_and_is_not_followed(sessions, db, org, receiver):
    inside = receiver()
    server = receiver(lambda _r: Reply(307, {}, {"Location": f"http://localhost:{inside.port}/"}))
    subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    result = webhooks.deliver(sessions, delivery_id=delivery_id)
    assert result.outcome is Outcome.RETRY and result.status_code == 307
    assert inside.received == []
    row = db.get(WebhookDelivery, delivery_id)
    db.refresh(row)
    assert "redirect" in row.last_error and "not followed" in row.last_error


def test_a_url_turned_internal_is_refused_at_send(sessions, db, org, receiver):
    server = receiver()
    sub = subscribe(db, org.id, f"{server.url}/hook")
    # Registered when allowed; now aimed at a name that resolves to loopback.
    sub.url = f"http://localhost:{server.port}/hook"
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    assert webhooks.deliver(sessions, delivery_id=delivery_id).outcome is Outcome.RETRY
    assert server.received == []
    row = db.get(WebhookDelivery, delivery_id)
    db.refresh(row)
    assert "egress refused" in row.last_error


def test_a_timeout_is_a_failed_attempt(sessions, db, org, receiver):
    server = receiver(lambda _r: Reply(200, delay=5))  # BATON_WEBHOOK_TIMEOUT_SECONDS=3
    subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    result = webhooks.deliver(sessions, delivery_id=delivery_id)
    assert result.outcome is Outcome.RETRY and result.status_code is None


def test_rotation_signs_with_both_secrets_until_the_grace_ends(sessions, db, org, receiver):
    server = receiver()
    sub = subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    principal = Principal(uuid.uuid4(), org.id, "admin")
    new = webhooks.rotate_secret(sessions, principal=principal, webhook_id=sub.id).secret
    (delivery_id,) = emit(sessions, org.id)
    webhooks.deliver(sessions, delivery_id=delivery_id)
    request = server.received[-1]
    assert len(request.headers["webhook-signature"].split()) == 2
    assert webhooks.verify(SECRET, request.headers, request.body)
    assert webhooks.verify(new, request.headers, request.body)
    # Past the grace period only the new secret signs.
    db.execute(
        sa.update(WebhookSubscription)
        .where(WebhookSubscription.id == sub.id)
        .values(previous_secret_expires_at=sa.func.now() - timedelta(seconds=1))
    )
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    webhooks.deliver(sessions, delivery_id=delivery_id)
    request = server.received[-1]
    assert not webhooks.verify(SECRET, request.headers, request.body)
    assert webhooks.verify(new, request.headers, request.body)


def test_a_subscription_failing_repeatedly_is_disabled_with_a_notification(
    sessions, db, org, receiver
):
    # conftest: 4 attempts per delivery, disabled after 2 failed deliveries in a row.
    server = receiver(lambda _r: Reply(500))
    sub = subscribe(db, org.id, f"{server.url}/hook")
    db.commit()
    for _ in range(2):
        (delivery_id,) = emit(sessions, org.id)
        outcomes = [webhooks.deliver(sessions, delivery_id=delivery_id).outcome for _ in range(4)]
        assert outcomes == [Outcome.RETRY] * 3 + [Outcome.FAILED]
    db.refresh(sub)
    assert sub.is_active is False and "2 failed deliveries" in sub.disabled_reason
    note = db.scalar(sa.select(Notification).filter_by(organization_id=org.id))
    assert note.type == "webhook_disabled" and str(sub.id) in str(note.data)
    assert emit(sessions, org.id) == []  # a disabled subscription gets no new rows


# -- end to end: real worker processes, real broker, a committed database ---------------


def wait_until(check, timeout=60.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("timed out")


@pytest.mark.usefixtures("workers")
def test_job_events_reach_a_flaky_receiver_with_one_id(live_client, database_url, receiver):
    answers = iter([500, 500])
    server = receiver(lambda _r: Reply(next(answers, 204)))
    tenant = live_tenant(live_client.application, database_url)
    h = tenant["headers"]
    created = live_client.post(
        "/api/v1/webhooks",
        json={"url": f"{server.url}/hook", "event_types": ["job.completed"], "secret": SECRET},
        headers=h,
    )
    assert created.status_code == 201, created.get_json()
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "Say hello", "agent_id": str(tenant["agent_id"])},
        headers=h,
    ).get_json()
    assert wait_terminal(live_client, accepted["location"], h)["status"] == "completed"
    log_url = f"/api/v1/webhooks/{created.get_json()['id']}/deliveries"
    log = wait_until(
        lambda: (
            (body := live_client.get(log_url, headers=h).get_json())["items"]
            and body["items"][0]["status"] == "delivered"
            and body
        )
    )
    (delivery,) = log["items"]
    assert [a["status_code"] for a in delivery["attempt_log"]] == [500, 500, 204]
    assert len(server.received) == 3
    assert {r.headers["webhook-id"] for r in server.received} == {delivery["id"]}
    assert all(webhooks.verify(SECRET, r.headers, r.body) for r in server.received)
    body = server.received[-1].json()
    assert body["type"] == "job.completed" and body["data"]["job_id"] == accepted["id"]


@pytest.mark.usefixtures("workers")
def test_beat_resends_an_outbox_row_whose_message_was_lost(database_url, receiver):
    server = receiver()
    sessions = session_factory(database_url)
    with transaction(sessions) as session:
        org = factories.organization(session)
        subscribe(session, org.id, f"{server.url}/hook")
        (delivery_id,) = webhooks.record_event(
            session, organization_id=org.id, event_type="emergency.pause", data={}
        )
        session.info.clear()  # the message is "lost": nothing is sent at commit
    time.sleep(1.0)
    assert server.received == []
    assert webhooks.resend_lost(sessions, lost_after=timedelta(0)) >= 1
    wait_until(lambda: server.received)
    assert server.received[0].headers["webhook-id"] == str(delivery_id)

    def delivered() -> bool:
        with sessions() as session:
            status = session.scalar(
                sa.select(WebhookDelivery.status).where(WebhookDelivery.id == delivery_id)
            )
        return status == "delivered"

    wait_until(delivered)


def test_an_unreadable_secret_fails_the_delivery_without_sending(sessions, db, org, receiver):
    server = receiver()
    sub = subscribe(db, org.id, f"{server.url}/hook")
    sub.encrypted_secret = "not-a-fernet-token"
    db.commit()
    (delivery_id,) = emit(sessions, org.id)
    assert webhooks.deliver(sessions, delivery_id=delivery_id).outcome is Outcome.SKIPPED
    row = db.get(WebhookDelivery, delivery_id)
    db.refresh(row)
    assert row.status == "failed" and "unreadable" in row.last_error
    assert server.received == []


def test_deliveries_are_on_a_queue_every_default_worker_consumes():
    from baton.cli import worker_command

    command = worker_command()
    queues = command[command.index("-Q") + 1].split(",")
    assert webhooks.queue_name() in queues
    assert webhooks.queue_name().endswith(".webhooks")
