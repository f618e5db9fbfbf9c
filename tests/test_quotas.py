"""Seed 003's monthly API quota: counted per calendar month (UTC) in Redis, atomically,
shown on /organizations/current, QUOTA_EXCEEDED when spent."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import sqlalchemy as sa

from models import Organization
from orchestration import quotas
from tests import factories
from tests.test_auth import assert_error


def current(client, headers):
    response = client.get("/api/v1/organizations/current", headers=headers)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def test_usage_is_counted_and_shown(client, app, db):
    user = factories.user(db)
    db.commit()
    h = factories.auth_headers(app, user)
    body = current(client, h)
    assert body["api_quota_limit"] is None and body["api_quota_used"] == 0
    assert body["require_2fa"] is False
    for _ in range(3):
        assert client.get("/api/v1/users/me", headers=h).status_code == 200
    # Reading the quota itself is free.
    assert current(client, h)["api_quota_used"] == 3


def test_a_spent_quota_is_429_quota_exceeded(client, app, db):
    org = factories.organization(db, api_quota_limit=3)
    user = factories.user(db, org, role="member")
    other = factories.user(db, role="member")
    db.commit()
    h = factories.auth_headers(app, user)
    for _ in range(3):
        assert client.get("/api/v1/projects", headers=h).status_code == 200
    for _ in range(2):  # refused requests do not count
        refused = client.post("/api/v1/tasks", json={"description": "x"}, headers=h)
        error = assert_error(refused, 429, "QUOTA_EXCEEDED")
        detail = error["details"][0]
        assert detail["api_quota_limit"] == 3 and detail["api_quota_used"] == 3
        assert detail["resets_at"] == quotas.next_month_start(datetime.now(UTC)).isoformat().replace("+00:00", "Z")  # fmt: skip
        # The limiter re-derives the header from the same instant: a second of rounding.
        assert abs(int(refused.headers["Retry-After"]) - detail["retry_after"]) <= 1
        assert detail["retry_after"] > 0
    body = current(client, h)
    assert (body["api_quota_limit"], body["api_quota_used"]) == (3, 3)
    # Another organization is not affected.
    assert client.get("/api/v1/projects", headers=factories.auth_headers(app, other)).status_code == 200  # fmt: skip
    # Raising the limit lets the organization go on at once.
    db.execute(sa.update(Organization).where(Organization.id == org.id).values(api_quota_limit=4))
    db.commit()
    assert client.get("/api/v1/projects", headers=h).status_code == 200
    assert_error(client.get("/api/v1/projects", headers=h), 429, "QUOTA_EXCEEDED")


def test_each_calendar_month_counts_afresh():
    org_id = uuid.uuid4()
    december = datetime(2030, 12, 31, 23, 59, 59, tzinfo=UTC)
    january = datetime(2031, 1, 1, 0, 0, 0, tzinfo=UTC)
    for _ in range(2):
        assert quotas.spend(org_id, limit=2, now=december).allowed
    spent = quotas.spend(org_id, limit=2, now=december)
    assert not spent.allowed and spent.used == 2
    assert spent.resets_at == january
    fresh = quotas.spend(org_id, limit=2, now=january)
    assert fresh.allowed and fresh.used == 1
    assert quotas.used(org_id, now=december) == 2
    assert quotas.used(org_id, now=january) == 1


def test_concurrent_requests_never_pass_the_quota():
    org_id = uuid.uuid4()
    with ThreadPoolExecutor(max_workers=16) as pool:
        results = list(pool.map(lambda _: quotas.spend(org_id, limit=50), range(200)))
    assert sum(r.allowed for r in results) == 50
    assert quotas.used(org_id) == 50


def test_admins_require_2fa_but_cannot_change_the_quota(client, app, db):
    org = factories.organization(db, api_quota_limit=100)
    admin = factories.user(db, org, role="admin")
    member = factories.user(db, org, role="member")
    db.commit()
    h = factories.auth_headers(app, admin)
    changed = client.put("/api/v1/organizations/current", json={"require_2fa": True}, headers=h)
    assert changed.status_code == 200, changed.get_json()
    assert changed.get_json()["require_2fa"] is True
    quota = client.put("/api/v1/organizations/current", json={"api_quota_limit": 10**6}, headers=h)
    assert_error(quota, 422, "VALIDATION_ERROR", "api_quota_limit")
    refused = client.put(
        "/api/v1/organizations/current",
        json={"require_2fa": False},
        headers=factories.auth_headers(app, member),
    )
    assert_error(refused, 403, "FORBIDDEN")
