"""Idempotency-Key: scoped to organization and operation, replays the first answer, 422 for
another request, 409 while in flight, expires (24 h by default), purged by beat."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from models import IdempotencyKey, Project, utcnow
from orchestration import idempotency
from tests import factories
from tests.test_auth import assert_error


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    other = factories.user(db, role="admin")
    db.commit()
    return {
        "org": org,
        "headers": factories.auth_headers(app, user),
        "other_headers": factories.auth_headers(app, other),
    }


def keyed(headers, key: str) -> dict[str, str]:
    return {**headers, "Idempotency-Key": key}


def projects_named(db, name: str) -> int:
    return db.scalar(sa.select(sa.func.count()).select_from(Project).where(Project.name == name))


def test_a_retry_replays_the_first_answer(client, db, tenant):
    key, name = f"k-{uuid.uuid4()}", f"p-{uuid.uuid4().hex[:8]}"
    first = client.post(
        "/api/v1/projects", json={"name": name}, headers=keyed(tenant["headers"], key)
    )
    assert first.status_code == 201, first.get_json()
    assert "Idempotent-Replayed" not in first.headers
    # The same request again, with the keys of its JSON body in another order.
    again = client.post(
        "/api/v1/projects",
        data=f'{{ "name" : "{name}" }}',
        content_type="application/json",
        headers=keyed(tenant["headers"], key),
    )
    assert again.status_code == 201
    assert again.get_json() == first.get_json()
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.headers["Content-Type"] == "application/json"
    assert projects_named(db, name) == 1
    row = db.scalar(sa.select(IdempotencyKey).where(IdempotencyKey.key == key))
    assert row.operation == "POST /api/v1/projects"
    # 24 hours by default.
    assert row.expires_at - row.created_at == timedelta(hours=24)


def test_the_same_key_with_another_request_is_422(client, db, tenant):
    key = f"k-{uuid.uuid4()}"
    h = keyed(tenant["headers"], key)
    assert client.post("/api/v1/projects", json={"name": "first"}, headers=h).status_code == 201
    other = client.post("/api/v1/projects", json={"name": "second"}, headers=h)
    assert_error(other, 422, "VALIDATION_ERROR", "Idempotency-Key")
    # Another query string is another request too.
    assert_error(
        client.post("/api/v1/projects?x=1", json={"name": "first"}, headers=h),
        422,
        "VALIDATION_ERROR",
        "Idempotency-Key",
    )


def test_keys_are_scoped_to_organization_and_operation(client, db, tenant):
    key, name = f"k-{uuid.uuid4()}", f"p-{uuid.uuid4().hex[:8]}"
    body = {"name": name}
    mine = client.post("/api/v1/projects", json=body, headers=keyed(tenant["headers"], key))
    theirs = client.post("/api/v1/projects", json=body, headers=keyed(tenant["other_headers"], key))
    assert mine.status_code == theirs.status_code == 201
    assert mine.get_json()["id"] != theirs.get_json()["id"]
    assert "Idempotent-Replayed" not in theirs.headers
    agent = client.post("/api/v1/agents", json=body, headers=keyed(tenant["headers"], key))
    assert agent.status_code == 201, agent.get_json()
    assert "Idempotent-Replayed" not in agent.headers
    assert projects_named(db, name) == 2


def test_a_duplicate_while_the_first_is_in_flight_is_409(client, db, app, tenant):
    key, body = f"k-{uuid.uuid4()}", {"name": f"p-{uuid.uuid4().hex[:8]}"}
    h = keyed(tenant["headers"], key)
    # The first request claims the key exactly as the API does, and has not answered yet.
    with app.test_request_context("/api/v1/projects", method="POST", json=body):
        from api.idempotency import _fingerprint

        fingerprint = _fingerprint()
    claim = idempotency.begin(
        app.extensions["baton.sessions"],
        organization_id=tenant["org"].id,
        operation="POST /api/v1/projects",
        key=key,
        fingerprint=fingerprint,
    )
    assert isinstance(claim, idempotency.Claim)
    duplicate = client.post("/api/v1/projects", json=body, headers=h)
    assert_error(duplicate, 409, "CONFLICT", "Idempotency-Key")
    assert projects_named(db, body["name"]) == 0
    # A first request that died holds the key only until its lock runs out.
    db.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.key == key)
        .values(locked_until=utcnow() - timedelta(seconds=1))
    )
    db.commit()
    retried = client.post("/api/v1/projects", json=body, headers=h)
    assert retried.status_code == 201
    assert projects_named(db, body["name"]) == 1


def test_an_expired_key_is_a_new_key(client, db, tenant):
    key = f"k-{uuid.uuid4()}"
    h = keyed(tenant["headers"], key)
    assert client.post("/api/v1/projects", json={"name": "old"}, headers=h).status_code == 201
    db.execute(
        sa.update(IdempotencyKey)
        .where(IdempotencyKey.key == key)
        .values(expires_at=utcnow() - timedelta(seconds=1))
    )
    db.commit()
    fresh = client.post("/api/v1/projects", json={"name": "new"}, headers=h)
    assert fresh.status_code == 201
    assert "Idempotent-Replayed" not in fresh.headers
    assert fresh.get_json()["name"] == "new"


def test_refusals_that_changed_nothing_release_the_key(client, db, tenant):
    key = f"k-{uuid.uuid4()}"
    h = keyed(tenant["headers"], key)
    # A validation error is not kept: the corrected request may use the same key.
    assert_error(client.post("/api/v1/projects", json={}, headers=h), 422, "VALIDATION_ERROR")
    fixed = client.post("/api/v1/projects", json={"name": "fixed"}, headers=h)
    assert fixed.status_code == 201
    # A 404 is an answer and is replayed.
    missing = f"/api/v1/jobs/{uuid.uuid4()}/cancel"
    first = client.post(missing, headers=keyed(tenant["headers"], f"k-{uuid.uuid4()}"))
    assert_error(first, 404, "RESOURCE_NOT_FOUND")
    again = client.post(missing, headers=keyed(tenant["headers"], first.request.headers["Idempotency-Key"]))  # fmt: skip
    assert again.status_code == 404 and again.headers["Idempotent-Replayed"] == "true"


@pytest.mark.parametrize("key", ["", "x" * 256, "bad\tkey"])
def test_a_malformed_key_is_422(client, tenant, key):
    response = client.post("/api/v1/projects", json={"name": "n"}, headers=keyed(tenant["headers"], key))  # fmt: skip
    assert_error(response, 422, "VALIDATION_ERROR", "Idempotency-Key")


def test_purge_removes_only_expired_keys(sessions, db, tenant):
    now = utcnow()
    for key, expires in (("old", now - timedelta(minutes=1)), ("live", now + timedelta(hours=1))):
        db.add(
            IdempotencyKey(
                organization_id=tenant["org"].id, operation="POST /x", key=key, fingerprint="f",
                locked_until=now, expires_at=expires, response_status=201, response_body="{}",
            )
        )  # fmt: skip
    db.commit()
    assert idempotency.purge_expired(sessions) >= 1
    left = db.scalars(
        sa.select(IdempotencyKey.key).where(IdempotencyKey.organization_id == tenant["org"].id)
    ).all()
    assert left == ["live"]
