"""Notifications: who sees what, per-user read state, filters, read and read-all."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from models import utcnow
from tests import factories
from tests.test_auth import assert_error

URL = "/api/v1/notifications"


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    me = factories.user(db, org, role="viewer")
    colleague = factories.user(db, org, role="admin")
    other_org = factories.organization(db)
    outsider = factories.user(db, other_org)
    now = utcnow()
    # Oldest first; the list answers newest first.
    rows = {
        "org_info": factories.notification(
            db, org, severity="info", title="info", created_at=now - timedelta(minutes=5)
        ),
        "org_warning": factories.notification(
            db, org, severity="warning", title="warning", created_at=now - timedelta(minutes=4)
        ),
        "mine": factories.notification(
            db, org, severity="critical", title="mine", user_id=me.id,
            created_at=now - timedelta(minutes=3),
        ),
        "colleagues": factories.notification(
            db, org, severity="critical", title="colleague's", user_id=colleague.id,
            created_at=now - timedelta(minutes=2),
        ),
        "foreign": factories.notification(
            db, other_org, severity="critical", title="foreign", created_at=now
        ),
    }  # fmt: skip
    db.commit()
    return {
        **rows,
        "headers": factories.auth_headers(app, me),
        "colleague_headers": factories.auth_headers(app, colleague),
        "outsider_headers": factories.auth_headers(app, outsider),
    }


def titles(client, headers, query: str = "") -> list[str]:
    response = client.get(f"{URL}?{query}", headers=headers)
    assert response.status_code == 200, response.get_json()
    return [n["title"] for n in response.get_json()["items"]]


def test_each_user_sees_the_organizations_and_their_own(client, tenant):
    body = client.get(URL, headers=tenant["headers"]).get_json()
    assert {"items", "total", "limit", "offset", "has_next", "next_cursor"} <= set(body)
    assert body["total"] == 3
    assert [n["title"] for n in body["items"]] == ["mine", "warning", "info"]
    first = body["items"][0]
    assert first["is_read"] is False and first["read_at"] is None
    assert first["severity"] == "critical" and first["type"] == "budget_alert"
    assert titles(client, tenant["colleague_headers"]) == ["colleague's", "warning", "info"]
    assert titles(client, tenant["outsider_headers"]) == ["foreign"]


def test_filters_and_limit(client, tenant):
    h = tenant["headers"]
    assert titles(client, h, "severity=warning") == ["warning"]
    assert titles(client, h, "severity=critical") == ["mine"]
    assert titles(client, h, "limit=2") == ["mine", "warning"]
    assert titles(client, h, "limit=2&page=2") == ["info"]
    assert titles(client, h, "is_read=true") == []
    assert titles(client, h, "is_read=false") == ["mine", "warning", "info"]
    assert titles(client, h, "sort=created_at") == ["info", "warning", "mine"]
    assert titles(client, h, "sort=severity") == ["info", "warning", "mine"]
    assert titles(client, h, "sort=-severity,created_at") == ["mine", "warning", "info"]
    for query, field in (
        ("severity=loud", "severity"),
        ("is_read=perhaps", "is_read"),
        ("limit=0", "limit"),
        ("sort=title", "sort"),
    ):
        assert_error(client.get(f"{URL}?{query}", headers=h), 422, "VALIDATION_ERROR", field)
    assert_error(client.get(URL), 401, "AUTHENTICATION_REQUIRED")


def test_read_state_is_per_user(client, tenant):
    h = tenant["headers"]
    url = f"{URL}/{tenant['org_warning'].id}/read"
    response = client.post(url, headers=h)
    assert response.status_code == 200
    read = response.get_json()
    assert read["is_read"] is True and read["read_at"] and read["title"] == "warning"
    again = client.post(url, headers=h).get_json()
    assert again["read_at"] == read["read_at"]  # the first read time stays

    assert titles(client, h, "is_read=true") == ["warning"]
    assert titles(client, h, "is_read=false") == ["mine", "info"]
    # The colleague has not read the organization-wide alert.
    assert titles(client, tenant["colleague_headers"], "is_read=false") == [
        "colleague's",
        "warning",
        "info",
    ]


def test_read_all_marks_only_the_callers_unread(client, tenant):
    h = tenant["headers"]
    client.post(f"{URL}/{tenant['org_info'].id}/read", headers=h)
    response = client.post(f"{URL}/read-all", headers=h)
    assert response.status_code == 200
    assert response.get_json()["marked_read"] == 2
    assert titles(client, h, "is_read=false") == []
    assert client.post(f"{URL}/read-all", headers=h).get_json()["marked_read"] == 0
    assert len(titles(client, tenant["colleague_headers"], "is_read=false")) == 3
    assert titles(client, tenant["outsider_headers"], "is_read=false") == ["foreign"]


def test_notifications_the_caller_cannot_see_are_404(client, tenant):
    h = tenant["headers"]
    for note_id in (tenant["foreign"].id, tenant["colleagues"].id, uuid.uuid4()):
        assert_error(client.post(f"{URL}/{note_id}/read", headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(client.post(f"{URL}/not-a-uuid/read", headers=h), 404, "RESOURCE_NOT_FOUND")
    # Nothing was marked for anyone.
    assert titles(client, tenant["outsider_headers"], "is_read=true") == []
    assert titles(client, tenant["colleague_headers"], "is_read=true") == []
