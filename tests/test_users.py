"""Users (/users/me, admin create/list) and /organizations/current."""

from __future__ import annotations

import uuid

import pytest

from tests import factories
from tests.test_auth import PASSWORD, assert_error, login, register


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin", full_name="Ada Admin")
    member = factories.user(db, org, role="member")
    viewer = factories.user(db, org, role="viewer")
    other_org = factories.organization(db)
    outsider = factories.user(db, other_org, role="admin")
    db.commit()
    return {
        "org": org,
        "admin": admin,
        "member": member,
        "viewer": viewer,
        "outsider": outsider,
        "headers": factories.auth_headers(app, admin),
        "member_headers": factories.auth_headers(app, member),
        "viewer_headers": factories.auth_headers(app, viewer),
        "outsider_headers": factories.auth_headers(app, outsider),
    }


def test_me_requires_a_token(client):
    assert_error(client.get("/api/v1/users/me"), 401, "AUTHENTICATION_REQUIRED")
    assert_error(
        client.get("/api/v1/users/me", headers={"Authorization": "Bearer x.y.z"}),
        401,
        "AUTHENTICATION_REQUIRED",
    )


def test_get_me(client, tenant):
    body = client.get("/api/v1/users/me", headers=tenant["headers"]).get_json()
    assert body["id"] == str(tenant["admin"].id)
    assert body["email"] == tenant["admin"].email
    assert body["full_name"] == "Ada Admin"
    assert body["role"] == "admin"
    assert body["created_at"] and body["updated_at"]
    assert "password_hash" not in body


def test_update_me_changes_profile_and_password(client):
    created = register(client).get_json()
    headers = {"Authorization": f"Bearer {created['access_token']}"}
    new_email = f"renamed-{uuid.uuid4().hex[:6]}@example.com"
    response = client.put(
        "/api/v1/users/me",
        json={
            "email": new_email,
            "password": "a-brand-new-password",
            "full_name": "New Name",
            "username": f"renamed_{uuid.uuid4().hex[:6]}",
        },
        headers=headers,
    )
    assert response.status_code == 200, response.get_json()
    body = response.get_json()
    assert body["email"] == new_email
    assert body["full_name"] == "New Name"
    assert body["role"] == "admin"
    assert_error(login(client, email=new_email, password=PASSWORD), 401, "AUTHENTICATION_REQUIRED")
    assert login(client, email=new_email, password="a-brand-new-password").status_code == 200
    # The old password's login cannot be refreshed any more.
    stale = client.post("/api/v1/auth/refresh", json={"refresh_token": created["refresh_token"]})
    assert_error(stale, 401, "AUTHENTICATION_REQUIRED")


def test_update_me_conflicts_are_409(client, tenant):
    headers = tenant["member_headers"]
    taken_email = client.put(
        "/api/v1/users/me", json={"email": tenant["admin"].email}, headers=headers
    )
    assert_error(taken_email, 409, "CONFLICT", "email")
    taken_username = client.put(
        "/api/v1/users/me", json={"username": tenant["outsider"].username}, headers=headers
    )
    assert_error(taken_username, 409, "CONFLICT", "username")
    # Keeping one's own values is not a conflict.
    same = client.put("/api/v1/users/me", json={"email": tenant["member"].email}, headers=headers)
    assert same.status_code == 200


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"email": "nope"}, "email"),
        ({"password": "short"}, "password"),
        ({"role": "admin"}, "role"),  # a user cannot promote themselves
        ({"username": "x"}, "username"),
    ],
)
def test_update_me_bad_input(client, tenant, body, field):
    response = client.put("/api/v1/users/me", json=body, headers=tenant["member_headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)


def test_admin_creates_user_in_own_org(client, tenant):
    email = f"new-{uuid.uuid4().hex[:6]}@example.com"
    response = client.post(
        "/api/v1/users",
        json={"email": email, "password": "long-enough-pw", "role": "manager"},
        headers=tenant["headers"],
    )
    assert response.status_code == 201, response.get_json()
    body = response.get_json()
    assert body["role"] == "manager"
    assert body["organization_id"] == str(tenant["org"].id)
    assert login(client, email=email, password="long-enough-pw").status_code == 200

    duplicate = client.post(
        "/api/v1/users",
        json={"email": email, "password": "long-enough-pw"},
        headers=tenant["headers"],
    )
    assert_error(duplicate, 409, "CONFLICT", "email")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "long-enough-pw"}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": "a@example.com", "password": "long-enough-pw", "role": "owner"}, "role"),
        ({"email": "a@example.com", "password": "short"}, "password"),
    ],
)
def test_create_user_bad_input(client, tenant, body, field):
    response = client.post("/api/v1/users", json=body, headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)


@pytest.mark.parametrize("who", ["member_headers", "viewer_headers"])
def test_non_admins_cannot_manage_users(client, tenant, who):
    headers = tenant[who]
    assert_error(client.get("/api/v1/users", headers=headers), 403, "FORBIDDEN")
    response = client.post(
        "/api/v1/users",
        json={"email": "x@example.com", "password": "long-enough-pw"},
        headers=headers,
    )
    assert_error(response, 403, "FORBIDDEN")


def test_list_users_is_scoped_filtered_and_paginated(client, tenant):
    body = client.get("/api/v1/users", headers=tenant["headers"]).get_json()
    assert {"items", "total", "limit", "offset", "has_next", "next_cursor"} <= set(body)
    assert body["total"] == 3
    assert body["limit"] == 20 and body["offset"] == 0
    ids = {u["id"] for u in body["items"]}
    assert str(tenant["outsider"].id) not in ids

    viewers = client.get("/api/v1/users?role=viewer", headers=tenant["headers"]).get_json()
    assert [u["id"] for u in viewers["items"]] == [str(tenant["viewer"].id)]

    page = client.get("/api/v1/users?limit=2&page=2&sort=email", headers=tenant["headers"])
    page_body = page.get_json()
    assert page_body["offset"] == 2 and len(page_body["items"]) == 1

    assert_error(
        client.get("/api/v1/users?role=owner", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        "role",
    )
    assert_error(
        client.get("/api/v1/users?limit=101", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        "limit",
    )
    assert_error(
        client.get("/api/v1/users?sort=password_hash", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        "sort",
    )


def test_get_current_organization(client, tenant):
    body = client.get("/api/v1/organizations/current", headers=tenant["viewer_headers"]).get_json()
    assert body["id"] == str(tenant["org"].id)
    assert set(body) >= {"id", "name", "slug", "subscription_tier", "settings", "created_at"}


def test_admin_updates_organization_settings(client, tenant):
    first = client.put(
        "/api/v1/organizations/current",
        json={"name": "Renamed", "settings": {"default_ai_model": "gpt-4", "x": 1}},
        headers=tenant["headers"],
    )
    assert first.status_code == 200, first.get_json()
    second = client.put(
        "/api/v1/organizations/current",
        json={"settings": {"integration_enabled": False, "x": None}},
        headers=tenant["headers"],
    )
    body = second.get_json()
    assert body["name"] == "Renamed"
    # Settings merge key by key; null removes a key.
    assert body["settings"] == {"default_ai_model": "gpt-4", "integration_enabled": False}


@pytest.mark.parametrize("model", ["gpt-99", "sim/nope", 42])
def test_organization_default_model_is_validated(client, tenant, model):
    response = client.put(
        "/api/v1/organizations/current",
        json={"settings": {"default_ai_model": model}},
        headers=tenant["headers"],
    )
    assert_error(response, 422, "VALIDATION_ERROR", "settings.default_ai_model")


def test_organization_update_bad_input_and_roles(client, tenant):
    assert_error(
        client.put("/api/v1/organizations/current", json={"name": ""}, headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        "name",
    )
    assert_error(
        client.put(
            "/api/v1/organizations/current", json={"settings": []}, headers=tenant["headers"]
        ),
        422,
        "VALIDATION_ERROR",
        "settings",
    )
    assert_error(
        client.put(
            "/api/v1/organizations/current",
            json={"name": "Mine now"},
            headers=tenant["member_headers"],
        ),
        403,
        "FORBIDDEN",
    )
