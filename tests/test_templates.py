"""Templates: own, built-in and public visibility; owner-only writes; input checks."""

from __future__ import annotations

import uuid

import pytest

from models import Template
from tests import factories
from tests.test_auth import assert_error

TEMPLATE = {
    "name": "Custom Template",
    "description": "My custom orchestration template",
    "category": "custom",
    "is_public": False,
    "template_data": {
        "phases": ["research", "design", "implementation", "testing"],
        "integrations": ["github", "docker"],
        "settings": {"ai_model": "gpt-4", "integration_enabled": True},
    },
}


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin")
    viewer = factories.user(db, org, role="viewer")
    other_org = factories.organization(db)
    outsider = factories.user(db, other_org, role="admin")
    builtin = Template(
        organization_id=None,
        name="Web Application Starter",
        description="Template for creating modern web applications",
        category="web-development",
        is_public=True,
        template_data={"phases": ["ideation", "design", "development"]},
    )
    foreign_public = Template(
        organization_id=other_org.id,
        name="Shared pipeline",
        category="data",
        is_public=True,
        template_data={"phases": ["extract", "load"]},
    )
    foreign_private = Template(
        organization_id=other_org.id,
        name="Secret pipeline",
        category="data",
        is_public=False,
        template_data={"phases": ["hidden"]},
    )
    db.add_all([builtin, foreign_public, foreign_private])
    db.commit()
    return {
        "admin": admin,
        "headers": factories.auth_headers(app, admin),
        "viewer_headers": factories.auth_headers(app, viewer),
        "outsider_headers": factories.auth_headers(app, outsider),
        "builtin": builtin,
        "foreign_public": foreign_public,
        "foreign_private": foreign_private,
    }


def create(client, headers, **overrides):
    response = client.post("/api/v1/templates", json={**TEMPLATE, **overrides}, headers=headers)
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def test_template_crud(client, tenant):
    headers = tenant["headers"]
    created = create(client, headers)
    assert created["template_data"]["phases"] == ["research", "design", "implementation", "testing"]
    assert created["is_public"] is False and created["is_builtin"] is False
    assert created["usage_count"] == 0
    assert created["created_by"]["id"] == str(tenant["admin"].id)

    url = f"/api/v1/templates/{created['id']}"
    assert client.get(url, headers=tenant["viewer_headers"]).get_json()["name"] == "Custom Template"

    updated = client.put(
        url,
        json={"name": "Renamed", "template_data": {"phases": ["only"]}},
        headers=headers,
    ).get_json()
    assert updated["name"] == "Renamed"
    assert updated["template_data"] == {"phases": ["only"], "settings": {}, "integrations": []}
    assert updated["category"] == "custom"

    assert client.delete(url, headers=headers).status_code == 204
    assert_error(client.get(url, headers=headers), 404, "RESOURCE_NOT_FOUND")


def test_visibility_own_builtin_and_public(client, tenant):
    own_private = create(client, tenant["headers"])
    body = client.get("/api/v1/templates", headers=tenant["headers"]).get_json()
    names = {t["name"] for t in body["items"]}
    assert names == {"Custom Template", "Web Application Starter", "Shared pipeline"}
    assert body["total"] == 3
    assert {"items", "total", "limit", "offset", "has_next", "next_cursor"} <= set(body)

    foreign_private = f"/api/v1/templates/{tenant['foreign_private'].id}"
    assert_error(client.get(foreign_private, headers=tenant["headers"]), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        client.put(foreign_private, json={"name": "x"}, headers=tenant["headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    # Our private template is invisible to the other organization.
    assert_error(
        client.get(f"/api/v1/templates/{own_private['id']}", headers=tenant["outsider_headers"]),
        404,
        "RESOURCE_NOT_FOUND",
    )
    builtin = client.get(f"/api/v1/templates/{tenant['builtin'].id}", headers=tenant["headers"])
    assert builtin.get_json()["is_builtin"] is True


@pytest.mark.parametrize("which", ["builtin", "foreign_public"])
def test_visible_but_not_owned_cannot_be_changed(client, tenant, which):
    url = f"/api/v1/templates/{tenant[which].id}"
    assert_error(client.put(url, json={"name": "x"}, headers=tenant["headers"]), 403, "FORBIDDEN")
    assert_error(client.delete(url, headers=tenant["headers"]), 403, "FORBIDDEN")


def test_template_filters(client, tenant):
    headers = tenant["headers"]
    create(client, headers, name="Mine public", is_public=True, category="data")

    def names(query: str) -> list[str]:
        response = client.get(f"/api/v1/templates?{query}", headers=headers)
        assert response.status_code == 200, response.get_json()
        return sorted(t["name"] for t in response.get_json()["items"])

    assert names("category=data") == ["Mine public", "Shared pipeline"]
    assert names("is_public=false") == []
    assert names("is_public=true") == ["Mine public", "Shared pipeline", "Web Application Starter"]
    assert names("search=modern web") == ["Web Application Starter"]
    assert names("search=PIPELINE") == ["Shared pipeline"]
    assert names("sort=name&limit=1") == ["Mine public"]
    assert_error(
        client.get("/api/v1/templates?is_public=maybe", headers=headers),
        422,
        "VALIDATION_ERROR",
        "is_public",
    )


def test_viewer_cannot_write_templates(client, tenant):
    response = client.post("/api/v1/templates", json=TEMPLATE, headers=tenant["viewer_headers"])
    assert_error(response, 403, "FORBIDDEN")
    assert client.get("/api/v1/templates", headers=tenant["viewer_headers"]).status_code == 200


def _with_data(**data):
    return {**TEMPLATE, "template_data": data}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"template_data": {"phases": ["a"]}}, "name"),
        ({"name": "x"}, "template_data"),
        (_with_data(), "template_data.phases"),
        (_with_data(phases=[]), "template_data.phases"),
        (_with_data(phases=["ok", ""]), "template_data.phases"),
        (_with_data(phases=["x" * 81]), "template_data.phases"),
        (_with_data(phases=[f"p{i}" for i in range(21)]), "template_data.phases"),
        (_with_data(phases=[1, 2]), "template_data.phases"),
        (_with_data(phases="ideation"), "template_data.phases"),
        (_with_data(phases=["a"], settings=[]), "template_data.settings"),
        (
            _with_data(phases=["a"], settings={"ai_model": "gpt-99"}),
            "template_data.settings.ai_model",
        ),
        ({**TEMPLATE, "is_public": "sometimes"}, "is_public"),
        ({**TEMPLATE, "category": ""}, "category"),
    ],
)
def test_template_bad_input(client, tenant, body, field):
    response = client.post("/api/v1/templates", json=body, headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)


def test_template_bad_ids(client, tenant):
    headers = tenant["headers"]
    assert_error(client.get("/api/v1/templates/xyz", headers=headers), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        client.delete(f"/api/v1/templates/{uuid.uuid4()}", headers=headers),
        404,
        "RESOURCE_NOT_FOUND",
    )
