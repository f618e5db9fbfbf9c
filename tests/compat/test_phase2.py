"""Seed 004 (Phase 2 builds) through its dialect: the document's examples at both mounts,
its error shapes for every bad input, its token claims, and the same jobs as /api/v1."""

from __future__ import annotations

import uuid

import pytest
from flask_jwt_extended import decode_token

from api.compat.phase2 import DIALECT
from tests import factories
from tests.compat.contract import load_examples, run_examples

MOUNTS = [DIALECT.base, ""]


@pytest.fixture
def member(app, db):
    app.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"  # these tests sign in often
    org = factories.organization(db)
    user = factories.user(db, org, role="member")
    db.commit()
    return {"org": org, "user": user}


def _context(user) -> dict:
    return {"username": user.username, "password": factories.DEFAULT_PASSWORD}


@pytest.mark.parametrize("base", MOUNTS, ids=["compat", "root"])
def test_the_documents_examples(client, member, base):
    failures = run_examples(client, base, load_examples("phase2"), _context(member["user"]))
    assert not failures, "\n".join(failures)


def _login(client, user, base=DIALECT.base) -> dict:
    response = client.post(
        f"{base}/auth/login",
        json={"username": user.username, "password": factories.DEFAULT_PASSWORD},
    )
    assert response.status_code == 200, response.get_json()
    return {"Authorization": f"Bearer {response.get_json()['access_token']}"}


def test_token_claims_are_the_documents(app, client, member):
    headers = _login(client, member["user"])
    with app.app_context():
        claims = decode_token(headers["Authorization"].split()[1])
    assert claims["sub"] == member["user"].username
    assert claims["role"] == "user"
    assert set(claims["permissions"]) == {
        "build:create", "build:read", "build:cancel", "analysis:create", "analysis:read"
    }  # fmt: skip
    assert {"exp", "iat"} <= set(claims)
    # The same login works on the canonical API (one user, one session).
    assert client.get("/api/v1/users/me", headers=headers).status_code == 200


def test_a_dialect_build_is_the_same_job_in_the_canonical_api(client, member):
    headers = _login(client, member["user"])
    created = client.post(
        "/api/build/", json={"project_name": "shop", "goal": "Add a cart"}, headers=headers
    )
    assert created.status_code == 202
    task_id = created.get_json()["task_id"]
    assert created.headers["Location"].endswith(f"/api/build/{task_id}")
    job = client.get(f"/api/v1/jobs/{task_id}", headers=headers).get_json()
    assert job["id"] == task_id and job["kind"] == "build" and job["status"] == "queued"
    compat = client.get(f"{DIALECT.base}/api/build/{task_id}", headers=headers).get_json()
    assert compat["status"] == "initializing"


def test_another_organizations_build_is_the_documents_not_found(client, db, member):
    stranger_org = factories.organization(db)
    theirs = factories.job(db, stranger_org, kind="build", input={"project_name": "x"})
    db.commit()
    headers = _login(client, member["user"])
    for method in ("GET", "DELETE"):
        response = client.open(f"/api/build/{theirs.id}", method=method, headers=headers)
        assert response.status_code == 404
        body = response.get_json()
        assert body["error"] == "not_found" and body["status_code"] == 404
        assert set(body) == {"error", "detail", "status_code", "timestamp"}


def test_users_see_their_own_builds_and_admins_all(client, db, member):
    colleague = factories.user(db, member["org"], role="member")
    admin = factories.user(db, member["org"], role="admin")
    db.commit()
    mine = _login(client, member["user"])
    task_id = client.post(
        "/api/build/", json={"project_name": "a", "goal": "b"}, headers=mine
    ).get_json()["task_id"]
    other = client.get(f"/api/build/{task_id}", headers=_login(client, colleague))
    assert other.status_code == 403 and other.get_json()["error"] == "forbidden"
    assert client.get("/api/build/", headers=_login(client, colleague)).get_json()["total"] == 0
    assert client.get(f"/api/build/{task_id}", headers=_login(client, admin)).status_code == 200


@pytest.mark.parametrize(
    ("kwargs", "status", "word"),
    [
        ({"data": "{not json", "content_type": "application/json"}, 400, "validation_error"),
        ({"json": {"project_name": "ok"}}, 422, "validation_error"),
        ({"json": {"project_name": "ok", "goal": "x", "extra": 1}}, 422, "validation_error"),
        ({"json": {"project_name": "o\u0000k", "goal": "x"}}, 422, "validation_error"),
        ({"data": "project_name=x", "content_type": "text/plain"}, 415, "unsupported_media_type"),
        ({"data": b"{" + b" " * 3_000_000 + b"}", "content_type": "application/json"}, 413,
         "payload_too_large"),
    ],
)  # fmt: skip
def test_bad_input_answers_in_the_documents_error_format(client, member, kwargs, status, word):
    headers = _login(client, member["user"])
    response = client.post("/compat/phase2/api/build/", headers=headers, **kwargs)
    assert response.status_code == status, response.get_data(as_text=True)[:300]
    body = response.get_json()
    assert body["error"] == word and body["status_code"] == status
    assert set(body) == {"error", "detail", "status_code", "timestamp"}


def test_auth_errors_and_long_urls_and_unknown_paths(client, member):
    no_token = client.get("/api/build/")
    assert no_token.status_code == 403 and no_token.get_json()["error"] == "not_authenticated"
    bad = client.get("/api/build/", headers={"Authorization": "Bearer nope"})
    assert bad.status_code == 401 and bad.get_json()["error"] == "unauthorized"
    # A wrong password is the document's 401, at both mounts (signing in needs no token).
    for base in MOUNTS:
        wrong = client.post(
            f"{base}/auth/login", json={"username": member["user"].username, "password": "no"}
        )
        assert wrong.status_code == 401 and wrong.get_json()["error"] == "unauthorized", base
    long = client.get("/api/build/?limit=" + "1" * 5000, headers=_login(client, member["user"]))
    assert long.status_code == 414 and long.get_json()["error"] == "uri_too_long"
    unknown = client.get("/compat/phase2/api/nothing")
    assert unknown.status_code == 404 and unknown.get_json()["error"] == "not_found"
    bad_id = client.get("/api/build/not-a-uuid", headers=_login(client, member["user"]))
    assert bad_id.status_code == 404 and bad_id.get_json()["status_code"] == 404
    # The canonical API keeps its own envelope.
    assert "code" in client.get("/api/v1/jobs").get_json()["error"]


def test_rate_limit_headers_and_429_in_the_documents_shape(app, client, member):
    headers = _login(client, member["user"])
    app.config["BATON_BUILD_RATE_LIMIT"] = "2/minute"
    answers = [
        client.post("/api/build/", json={"project_name": "a", "goal": "b"}, headers=headers)
        for _ in range(3)
    ]
    assert [a.status_code for a in answers] == [202, 202, 429]
    assert answers[0].headers["X-RateLimit-Limit"] == "2"
    assert {"X-RateLimit-Remaining", "X-RateLimit-Reset"} <= set(answers[0].headers.keys())
    assert answers[2].get_json() == {
        **answers[2].get_json(), "error": "rate_limit_exceeded", "detail": "Too many requests",
        "status_code": 429,
    }  # fmt: skip
    assert int(answers[2].headers["Retry-After"]) > 0
    # One bucket with the canonical route: the same user's 4th build anywhere is refused.
    canonical = client.post(
        "/api/v1/builds", json={"project_name": "a", "goal": "b"}, headers=headers
    )
    assert canonical.status_code == 429


def test_uuid_is_not_enough_to_read_a_missing_analysis(client, member):
    headers = _login(client, member["user"])
    response = client.get(f"/api/analysis/{uuid.uuid4()}", headers=headers)
    assert response.status_code == 404 and response.get_json()["error"] == "not_found"
