"""/integrations: admins add provider servers and keys; keys are encrypted at rest and
never come back; submissions are validated against the organization's own providers."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from baton.settings import reset_settings_cache
from models import Integration
from orchestration import secrets
from tests import factories
from tests.test_auth import assert_error

KEY = "sk-live-" + uuid.uuid4().hex + uuid.uuid4().hex
LOCAL = {
    "name": "mylocal",
    "base_url": "http://127.0.0.1:9/v1",
    "models": ["llama-local", "gpt-4o-mini"],
    "prices": {"llama-local": {"input": "0.10", "output": "0.20"}},
    "timeout_seconds": 30,
    "api_key": KEY,
}


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    admin = factories.user(db, org, role="admin")
    manager = factories.user(db, org, role="manager")
    viewer = factories.user(db, org, role="viewer")
    other = factories.organization(db)
    outsider = factories.user(db, other, role="admin")
    db.commit()
    return {
        "org": org,
        "headers": factories.auth_headers(app, admin),
        "manager_headers": factories.auth_headers(app, manager),
        "viewer_headers": factories.auth_headers(app, viewer),
        "outsider_headers": factories.auth_headers(app, outsider),
    }


def create(client, headers, body=LOCAL, status=201):
    response = client.post("/api/v1/integrations", json=body, headers=headers)
    assert response.status_code == status, response.get_json()
    return response.get_json()


def test_a_custom_provider_is_created_and_its_key_never_returned(client, tenant, db):
    created = create(client, tenant["headers"])
    assert created["kind"] == "custom" and created["api_key_set"] is True
    assert created["models"] == ["llama-local", "gpt-4o-mini"]
    assert created["prices"] == {"llama-local": {"input": "0.10", "output": "0.20"}}
    assert "api_key" not in created
    responses = [
        client.get("/api/v1/integrations", headers=tenant["headers"]),
        client.get(f"/api/v1/integrations/{created['id']}", headers=tenant["headers"]),
        client.patch(
            f"/api/v1/integrations/{created['id']}",
            json={"enabled": True},
            headers=tenant["headers"],
        ),
    ]
    for response in responses:
        assert response.status_code == 200
        text = response.get_data(as_text=True)
        assert KEY not in text and KEY[8:24] not in text and KEY[-8:] not in text
    listed = responses[0].get_json()
    assert listed["total"] == 1 and listed["items"][0]["name"] == "mylocal"

    # Encrypted at rest: the raw column is not the key, and decrypts to it.
    raw = db.execute(
        sa.text("SELECT encrypted_api_key FROM integrations WHERE id = :id"),
        {"id": uuid.UUID(created["id"])},
    ).scalar_one()
    assert raw and KEY not in raw and KEY[8:24] not in raw
    assert secrets.decrypt(raw) == KEY


def test_integrations_are_for_admins_of_their_own_organization(client, tenant):
    created = create(client, tenant["headers"])
    url = f"/api/v1/integrations/{created['id']}"
    for headers in (tenant["manager_headers"], tenant["viewer_headers"]):
        assert_error(client.get("/api/v1/integrations", headers=headers), 403, "FORBIDDEN")
        assert_error(
            client.post("/api/v1/integrations", json=LOCAL, headers=headers), 403, "FORBIDDEN"
        )
        assert_error(client.delete(url, headers=headers), 403, "FORBIDDEN")
    outsider = tenant["outsider_headers"]
    assert_error(client.get(url, headers=outsider), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        client.patch(url, json={"enabled": False}, headers=outsider), 404, "RESOURCE_NOT_FOUND"
    )
    assert client.get("/api/v1/integrations", headers=outsider).get_json()["total"] == 0
    assert client.get("/api/v1/integrations").status_code == 401


def test_no_encryption_key_means_no_stored_api_key(client, tenant, monkeypatch):
    monkeypatch.setenv("BATON_ENCRYPTION_KEY", "")
    reset_settings_cache()
    try:
        error = assert_error(
            client.post("/api/v1/integrations", json=LOCAL, headers=tenant["headers"]),
            422,
            "VALIDATION_ERROR",
            "api_key",
        )
        assert "BATON_ENCRYPTION_KEY is not configured" in error["details"][0]["message"]
        keyless = create(
            client, tenant["headers"], {k: v for k, v in LOCAL.items() if k != "api_key"}
        )
        assert keyless["api_key_set"] is False
        monkeypatch.setenv("BATON_ENCRYPTION_KEY", "not-a-fernet-key")
        reset_settings_cache()
        error = assert_error(
            client.patch(
                f"/api/v1/integrations/{keyless['id']}",
                json={"api_key": KEY},
                headers=tenant["headers"],
            ),
            422,
            "VALIDATION_ERROR",
            "api_key",
        )
        assert "not a valid Fernet key" in error["details"][0]["message"]
        assert KEY not in str(error)
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_an_organization_key_for_a_built_in_provider(client, tenant):
    created = create(client, tenant["headers"], {"name": "openai", "api_key": KEY})
    assert created["kind"] == "key" and created["api_key_set"] is True
    assert created["base_url"] is None
    assert_error(
        client.post(
            "/api/v1/integrations",
            json={"name": "groq", "api_key": KEY, "base_url": "http://127.0.0.1:9/v1"},
            headers=tenant["headers"],
        ),
        422,
        "VALIDATION_ERROR",
        "base_url",
    )
    assert_error(
        client.post("/api/v1/integrations", json={"name": "groq"}, headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        "api_key",
    )
    cleared = client.patch(
        f"/api/v1/integrations/{created['id']}", json={"api_key": None}, headers=tenant["headers"]
    ).get_json()
    assert cleared["api_key_set"] is False


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({**LOCAL, "name": "sim"}, "name"),
        ({**LOCAL, "name": "Bad Name"}, "name"),
        ({**LOCAL, "name": "a/b"}, "name"),
        ({k: v for k, v in LOCAL.items() if k != "base_url"}, "base_url"),
        ({**LOCAL, "base_url": "ftp://127.0.0.1/v1"}, "base_url"),
        ({k: v for k, v in LOCAL.items() if k != "models"}, "models"),
        ({**LOCAL, "models": []}, "models"),
        ({**LOCAL, "models": ["x", "x"]}, "models"),
        ({**LOCAL, "prices": {}}, "models.0"),
        ({**LOCAL, "prices": {"other": {"input": "1", "output": "1"}}}, "prices.other"),
        ({**LOCAL, "prices": {"llama-local": {"input": "-1", "output": "1"}}}, "prices"),
        ({**LOCAL, "timeout_seconds": 0}, "timeout_seconds"),
        ({**LOCAL, "api_key": " sk-with-space"}, "api_key"),
        ({**LOCAL, "mystery": 1}, "mystery"),
    ],
)
def test_bad_integrations_are_422(client, tenant, body, field):
    error = assert_error(
        client.post("/api/v1/integrations", json=body, headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
        field,
    )
    assert KEY not in str(error)


def test_names_are_unique_per_organization(client, tenant):
    create(client, tenant["headers"])
    assert_error(
        client.post("/api/v1/integrations", json=LOCAL, headers=tenant["headers"]), 409, "CONFLICT"
    )
    create(client, tenant["outsider_headers"])  # another organization may use the name


def test_submissions_know_the_organizations_providers(client, tenant):
    h = tenant["headers"]
    agent_body = {
        "name": "local agent",
        "config": {
            "providers": ["mylocal", "sim"],
            "model_preferences": {"general": "mylocal/llama-local"},
            "fallback_models": {"sim": "echo"},
        },
    }
    # Before the integration exists: unknown provider and model, 422 at submission.
    assert_error(
        client.post("/api/v1/agents", json=agent_body, headers=h),
        422,
        "VALIDATION_ERROR",
        "config.providers.0",
    )
    assert_error(
        client.post(
            "/api/v1/tasks",
            json={"description": "d", "settings": {"ai_model": "mylocal/llama-local"}},
            headers=h,
        ),
        422,
        "VALIDATION_ERROR",
        "model",
    )
    integration = create(client, h)
    agent = client.post("/api/v1/agents", json=agent_body, headers=h)
    assert agent.status_code == 201, agent.get_json()
    agent_id = agent.get_json()["id"]
    accepted = client.post(
        "/api/v1/tasks", json={"description": "d", "agent_id": agent_id}, headers=h
    )
    assert accepted.status_code == 202, accepted.get_json()
    org = client.put(
        "/api/v1/organizations/current",
        json={"settings": {"default_ai_model": "mylocal/llama-local"}},
        headers=h,
    )
    assert org.status_code == 200, org.get_json()

    # Another organization does not see it.
    assert_error(
        client.post("/api/v1/agents", json=agent_body, headers=tenant["outsider_headers"]),
        422,
        "VALIDATION_ERROR",
        "config.providers.0",
    )

    # Disabled or deleted: the agent's next submission is refused, not failed later.
    client.patch(f"/api/v1/integrations/{integration['id']}", json={"enabled": False}, headers=h)
    assert_error(
        client.post("/api/v1/tasks", json={"description": "d", "agent_id": agent_id}, headers=h),
        422,
        "VALIDATION_ERROR",
        "agent_id",
    )
    assert client.delete(f"/api/v1/integrations/{integration['id']}", headers=h).status_code == 204
    assert_error(
        client.post("/api/v1/tasks", json={"description": "d", "agent_id": agent_id}, headers=h),
        422,
        "VALIDATION_ERROR",
        "agent_id",
    )
    assert client.get(f"/api/v1/integrations/{integration['id']}", headers=h).status_code == 404


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/tasks", {"description": "d", "settings": {"ai_model": "nope/gpt-4o"}}, "model"),
        (
            "/api/v1/tasks",
            {"description": "d", "settings": {"sim_fault": "bogus"}},
            "settings.sim_fault",
        ),
        ("/api/v1/tasks", {"description": "d", "settings": {"stream": "maybe"}}, "settings.stream"),
        (
            "/api/v1/agents",
            {"name": "a", "config": {"fallback_models": {"groq": "gpt-4o"}}},
            "config.fallback_models.groq",
        ),
        (
            "/api/v1/agents",
            {"name": "a", "config": {"fallback_models": {"nowhere": "x"}}},
            "config.fallback_models.nowhere",
        ),
    ],
)
def test_unknown_providers_and_models_are_422_at_submission(client, tenant, path, body, field):
    assert_error(
        client.post(path, json=body, headers=tenant["headers"]), 422, "VALIDATION_ERROR", field
    )


def test_deleting_an_organization_deletes_its_integrations(client, tenant, db):
    org_id = tenant["org"].id
    create(client, tenant["headers"])
    owned = sa.select(sa.func.count()).where(Integration.organization_id == org_id)
    assert db.scalar(owned) == 1
    db.execute(sa.delete(type(tenant["org"])).where(type(tenant["org"]).id == org_id))
    assert db.scalar(owned) == 0


def test_a_worker_reads_and_decrypts_an_organizations_keys_again_only_when_they_change(db):
    """The step engine's per-process cache (integrations.cached_provider_context): the
    version read with the claim changes with every insert, update and delete."""
    from orchestration import integrations

    org = factories.organization(db)

    def context():
        version = db.scalar(sa.select(integrations.version_of(org.id)))
        return integrations.cached_provider_context(db, organization_id=org.id, version=version)

    empty = context()
    assert empty.keys == {} and context() is empty  # unchanged: the cached one
    row = Integration(organization_id=org.id, name="openai", encrypted_api_key=secrets.encrypt(KEY))
    db.add(row)
    db.flush()
    added = context()
    assert added is not empty and added.keys == {"openai": KEY}
    assert context() is added
    row.encrypted_api_key = secrets.encrypt(KEY + "2")
    db.flush()
    assert context().keys == {"openai": KEY + "2"}
    db.delete(row)
    db.flush()
    assert context().keys == {}
