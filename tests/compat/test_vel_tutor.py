"""Seed 000 (vel_tutor) through its dialect: the document's examples with real workers,
its error shapes (400 for validation), its roles, and the same jobs as /api/v1."""

from __future__ import annotations

import uuid

import pytest

from api.compat.vel_tutor import DIALECT
from models.db import session_factory, transaction
from tests import factories
from tests.compat.contract import load_examples, run_examples

BASE = DIALECT.base
PERPLEXITY = {
    "name": "perplexity",
    "base_url": "http://127.0.0.1:9/v1",
    "models": ["perplexity-sonar"],
    "prices": {"perplexity-sonar": {"input": "1.00", "output": "1.00"}},
}


def live_admin(database_url: str) -> dict:
    """A committed organization and admin, with credentials (workers see its rows)."""
    with transaction(session_factory(database_url)) as session:
        org = factories.organization(session)
        user = factories.user(session, org, role="admin")
        return {"org_id": org.id, "user_id": user.id, "email": user.email}


@pytest.fixture
def live_app(live_client):
    live_client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    return live_client


@pytest.mark.usefixtures("workers")
def test_the_documents_examples_with_real_workers(live_app, database_url):
    admin = live_admin(database_url)
    suffix = uuid.uuid4().hex[:8]
    context = {
        "email": admin["email"],
        "password": factories.DEFAULT_PASSWORD,
        "new_email": f"newuser-{suffix}@example.com",
        "changed_email": f"new-{suffix}@example.com",
    }
    # The document's agent prefers "perplexity-sonar" and later adds a "perplexity"
    # provider: its operator configures that OpenAI-compatible server (never called here).
    login = live_app.post(
        "/api/v1/auth/login", json={"email": admin["email"], "password": context["password"]}
    )
    headers = {"Authorization": f"Bearer {login.get_json()['access_token']}"}
    added = live_app.post("/api/v1/integrations", json=PERPLEXITY, headers=headers)
    assert added.status_code == 201, added.get_json()
    failures = run_examples(live_app, BASE, load_examples("vel_tutor"), context)
    assert not failures, "\n".join(failures)
