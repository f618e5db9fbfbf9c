"""A deactivated user spends nothing more: their running job stops before its next
provider call (real worker processes, real Redis broker, PostgreSQL)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from models import Organization, UsageRecord, User
from models.db import session_factory, transaction
from tests import factories
from tests.helpers import live_tenant, wait_for, wait_terminal

pytestmark = pytest.mark.usefixtures("workers")


def test_deactivating_a_user_stops_their_running_job(live_client, database_url):
    tenant = live_tenant(live_client.application, database_url, role="member")
    with transaction(session_factory(database_url)) as session:
        org = session.get(Organization, tenant["org_id"])
        admin_headers = factories.auth_headers(
            live_client.application, factories.user(session, org, role="admin")
        )
    accepted = live_client.post(
        "/api/v1/orchestrate",
        json={
            "topic": "slow run",
            "custom_phases": ["one", "two", "three", "four", "five"],
            "settings": {"ai_model": "sim/slow"},
        },
        headers=tenant["headers"],
    )
    assert accepted.status_code == 202, accepted.get_json()
    job_url = f"/api/v1/jobs/{accepted.get_json()['id']}"
    wait_for(live_client, job_url, admin_headers, lambda b: b["status"] == "running")
    with transaction(session_factory(database_url)) as session:
        session.execute(sa.update(User).where(User.id == tenant["user_id"]).values(is_active=False))
    # Their token is refused at once...
    refused = live_client.get(job_url, headers=tenant["headers"])
    assert refused.status_code == 401
    # ...and the job stops before the next call instead of spending on.
    body = wait_terminal(live_client, job_url, admin_headers, timeout=90)
    assert body["status"] == "cancelled", body
    assert "deactivated" in (body.get("error") or "")
    with transaction(session_factory(database_url)) as session:
        calls = session.scalar(
            sa.select(sa.func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.job_id == uuid.UUID(body["id"]))
        )
    assert calls <= 2, calls
