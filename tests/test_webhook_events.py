"""Where webhook events come from: each is an outbox row written in the same transaction
as the change it reports (and none when nobody subscribes)."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models import JobStatus, WebhookDelivery, WebhookSubscription
from orchestration import secrets
from orchestration.state import transition_job
from tests import factories
from tests.test_budget_limits import day_start


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db, name="Acme")
    admin = factories.user(db, org, role="admin")
    db.add(
        WebhookSubscription(
            organization_id=org.id,
            url="http://127.0.0.1:9/hook",
            event_types=["*"],
            encrypted_secret=secrets.encrypt("whsec_c2VjcmV0"),
            is_active=True,
            consecutive_failures=0,
        )
    )
    db.commit()
    return {"org": org, "h": factories.auth_headers(app, admin)}


def events(db, org) -> list[tuple[str, dict]]:
    # Other tests' end-to-end runs commit deliveries of their own organizations.
    rows = db.execute(
        sa.select(WebhookDelivery.event_type, WebhookDelivery.payload)
        .where(WebhookDelivery.organization_id == org.id)
        .order_by(WebhookDelivery.created_at, WebhookDelivery.id)
    )
    return [(t, p["data"]) for t, p in rows]


@pytest.mark.parametrize(
    "kind, final, expected",
    [
        ("task", JobStatus.COMPLETED, ["job.completed"]),
        ("task", JobStatus.FAILED, ["job.failed"]),
        ("agent_run", JobStatus.COMPLETED, ["job.completed", "agent.completed"]),
        (
            "orchestration",
            JobStatus.COMPLETED,
            ["orchestration.started", "job.completed", "orchestration.completed"],
        ),
        ("orchestration", JobStatus.CANCELLED, ["orchestration.started", "job.cancelled",
                                                 "orchestration.cancelled"]),
    ],
)  # fmt: skip
def test_job_transitions_are_events(db, tenant, kind, final, expected):
    job = factories.job(db, tenant["org"], kind=kind, status="queued")
    transition_job(db, job_id=job.id, to=JobStatus.RUNNING)
    transition_job(db, job_id=job.id, to=final, error="boom" if final == "failed" else None)
    got = events(db, tenant["org"])
    assert [t for t, _ in got] == expected
    assert all(d["job_id"] == str(job.id) and d["kind"] == kind for _, d in got)
    if final == JobStatus.FAILED:
        assert got[-1][1]["error"] == "boom"


def test_a_cancel_through_the_api_is_an_event(client, db, tenant):
    job = factories.job(db, tenant["org"], status="queued")
    db.commit()
    assert client.post(f"/api/v1/jobs/{job.id}/cancel", headers=tenant["h"]).status_code == 200
    assert [t for t, _ in events(db, tenant["org"])] == ["job.cancelled"]


def test_emergency_pause_and_resume_are_events(client, db, tenant):
    assert client.post("/api/v1/emergency/pause-all", headers=tenant["h"]).status_code == 200
    assert client.post("/api/v1/emergency/resume-all", headers=tenant["h"]).status_code == 200
    assert [t for t, _ in events(db, tenant["org"])] == ["emergency.pause", "emergency.resume"]


def test_a_budget_alert_is_an_event(client, db, tenant):
    factories.usage_record(db, tenant["org"], cost="9", created_at=day_start())
    db.commit()
    created = client.post(
        "/api/v1/budget/limits",
        json={
            "name": "Daily",
            "scope_type": "organization",
            "amount_usd": "10",
            "period": "daily",
            "alert_threshold": 0.8,
            "action_on_exceed": "warn",
        },
        headers=tenant["h"],
    )
    assert created.status_code == 201, created.get_json()
    ((event_type, data),) = events(db, tenant["org"])
    assert event_type == "budget.alert" and data["level"] == "warning"


def test_nobody_subscribed_means_no_rows(db):
    org = factories.organization(db)
    job = factories.job(db, org, status="queued")
    transition_job(db, job_id=job.id, to=JobStatus.RUNNING)
    transition_job(db, job_id=job.id, to=JobStatus.COMPLETED)
    count = sa.select(sa.func.count()).where(WebhookDelivery.organization_id == org.id)
    assert db.scalar(count) == 0
