"""/webhooks: both seeds' payloads, one stored shape; admins and managers only; secrets
encrypted and shown once; URLs aimed inside refused; the delivery log; rotation."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from models import WebhookSubscription
from orchestration import secrets
from tests import factories

SEED_002 = {
    "url": "http://127.0.0.1:9/hooks/taskassistant",
    "event_types": ["agent.completed", "usage.quota_exceeded", "subscription.expiring"],
    "secret": "webhook_secret_key_123",
    "description": "Production webhook",
    "is_active": True,
}
SEED_003 = {
    "name": "Custom Webhook",
    "url": "http://127.0.0.1:9/webhook",
    "events": ["orchestration.started", "orchestration.completed"],
    "secret_key": "optional_secret_for_verification",
}


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    users = {role: factories.user(db, org, role=role) for role in ("admin", "manager", "member")}
    outsider = factories.user(db, factories.organization(db), role="admin")
    db.commit()
    headers = {role: factories.auth_headers(app, u) for role, u in users.items()}
    return {"org": org, **headers, "outsider": factories.auth_headers(app, outsider)}


def create(client, headers, body, status=201):
    response = client.post("/api/v1/webhooks", json=body, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_seed_002_payload_is_stored_and_its_secret_encrypted(client, tenant, db):
    created = create(client, tenant["admin"], SEED_002)
    assert created["event_types"] == SEED_002["event_types"] == created["events"]
    assert created["is_active"] is True and created["description"] == "Production webhook"
    assert created["secret"] == "webhook_secret_key_123"
    row = db.get(WebhookSubscription, created["id"])
    assert "webhook_secret_key_123" not in row.encrypted_secret
    assert secrets.decrypt(row.encrypted_secret) == "webhook_secret_key_123"
    listed = client.get("/api/v1/webhooks", headers=tenant["admin"]).get_json()
    assert listed["total"] == 1 and "secret" not in listed["items"][0]
    one = client.get(f"/api/v1/webhooks/{created['id']}", headers=tenant["admin"]).get_json()
    assert "secret" not in one


def test_seed_003_payload_put_and_delete(client, tenant):
    created = create(client, tenant["manager"], SEED_003)
    assert created["name"] == "Custom Webhook"
    assert created["events"] == ["orchestration.started", "orchestration.completed"]
    url = f"/api/v1/webhooks/{created['id']}"
    changed = client.put(
        url,
        json={
            "name": "Updated Webhook",
            "url": "http://127.0.0.1:9/new-webhook",
            "events": ["orchestration.completed"],
            "is_active": False,
        },
        headers=tenant["manager"],
    )
    assert changed.status_code == 200, changed.get_json()
    body = changed.get_json()
    assert (body["name"], body["events"], body["is_active"]) == (
        "Updated Webhook",
        ["orchestration.completed"],
        False,
    )
    assert client.delete(url, headers=tenant["manager"]).status_code == 204
    assert client.get(url, headers=tenant["manager"]).status_code == 404


def test_a_generated_secret_is_a_standard_webhooks_secret(client, tenant):
    created = create(client, tenant["admin"], {"url": SEED_002["url"], "events": ["*"]})
    assert created["secret"].startswith("whsec_")


@pytest.mark.parametrize(
    "body, field",
    [
        ({**SEED_002, "event_types": ["job.exploded"]}, "event_types"),
        ({**SEED_002, "event_types": []}, "event_types"),
        ({**SEED_002, "url": "ftp://127.0.0.1/x"}, "url"),
        ({**SEED_002, "url": "http://localhost:9/x"}, "url"),
        ({**SEED_002, "url": "http://169.254.169.254/latest"}, "url"),
        ({**SEED_002, "url": "http://2130706433/x"}, "url"),
        ({**SEED_002, "url": "http://[::1]:9/x"}, "url"),
        ({**SEED_002, "secret": "short"}, "secret"),
    ],
)
def test_bad_subscriptions_are_422(client, tenant, body, field):
    response = client.post("/api/v1/webhooks", json=body, headers=tenant["admin"])
    assert response.status_code == 422, response.get_json()
    error = response.get_json()["error"]
    assert error["code"] == "VALIDATION_ERROR"
    assert field in str(error["details"])


def test_members_cannot_and_other_tenants_cannot_see(client, tenant):
    response = client.post("/api/v1/webhooks", json=SEED_002, headers=tenant["member"])
    assert response.status_code == 403
    created = create(client, tenant["admin"], SEED_002)
    url = f"/api/v1/webhooks/{created['id']}"
    assert client.get(url, headers=tenant["outsider"]).status_code == 404
    assert client.delete(url, headers=tenant["outsider"]).status_code == 404
    assert client.get("/api/v1/webhooks", headers=tenant["outsider"]).get_json()["total"] == 0


def test_rotation_keeps_the_old_secret_for_the_grace_period(client, tenant, db):
    created = create(client, tenant["admin"], SEED_002)
    rotated = client.post(
        f"/api/v1/webhooks/{created['id']}/rotate-secret",
        json={"grace_hours": 2},
        headers=tenant["admin"],
    ).get_json()
    assert rotated["secret"].startswith("whsec_") and rotated["previous_secret_expires_at"]
    row = db.scalar(sa.select(WebhookSubscription).filter_by(id=created["id"]))
    assert secrets.decrypt(row.encrypted_previous_secret) == SEED_002["secret"]
    assert secrets.decrypt(row.encrypted_secret) == rotated["secret"]


def test_ping_writes_a_test_delivery_to_the_log(client, tenant):
    created = create(client, tenant["admin"], SEED_002)
    ping = client.post(f"/api/v1/webhooks/{created['id']}/test", headers=tenant["admin"])
    assert ping.status_code == 202
    assert ping.get_json()["event_type"] == "webhook.test"
    log = client.get(
        f"/api/v1/webhooks/{created['id']}/deliveries", headers=tenant["admin"]
    ).get_json()
    assert log["total"] == 1 and log["items"][0]["id"] == ping.get_json()["id"]
