"""Sessions end when they should (issue 9 item 9) and seed 004's cancel ownership (item 11)."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from models import User
from tests import factories
from tests.test_auth import PASSWORD, assert_error, bearer, login, register


def me(client, token: str):
    return client.get("/api/v1/users/me", headers=bearer(token))


def test_access_tokens_live_fifteen_minutes_by_default(client, app):
    from flask_jwt_extended import decode_token

    tokens = register(client).get_json()
    assert tokens["expires_in"] == 900
    with app.app_context():
        claims = decode_token(tokens["access_token"])
    assert claims["exp"] - claims["iat"] == 900
    assert claims["fam"]


def test_a_deactivated_user_is_refused_at_once(client, db):
    tokens = register(client).get_json()
    token = tokens["access_token"]
    assert me(client, token).status_code == 200
    task = {"description": "Summarise the notes"}
    db.execute(sa.update(User).where(User.id == tokens["user"]["id"]).values(is_active=False))
    db.commit()
    assert_error(me(client, token), 401, "AUTHENTICATION_REQUIRED")
    submitted = client.post("/api/v1/tasks", json=task, headers=bearer(token))
    assert_error(submitted, 401, "AUTHENTICATION_REQUIRED")
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert_error(refreshed, 401, "AUTHENTICATION_REQUIRED")


def test_logout_ends_every_access_token_of_the_login(client):
    first = register(client).get_json()
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    rotated = rotated.get_json()
    other = login(client, email=first["user"]["email"], password=PASSWORD).get_json()
    # Logging out with the newest token of the login ends the older access token too.
    out = client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": rotated["refresh_token"]},
        headers=bearer(rotated["access_token"]),
    )
    assert out.status_code == 200, out.get_json()
    assert_error(me(client, first["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    assert_error(me(client, rotated["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    # Another login of the same user is not touched.
    assert me(client, other["access_token"]).status_code == 200


def test_refresh_token_reuse_kills_the_families_access_tokens(client):
    first = register(client).get_json()
    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    rotated = rotated.get_json()
    assert me(client, rotated["access_token"]).status_code == 200
    replay = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert_error(replay, 401, "AUTHENTICATION_REQUIRED")
    assert_error(me(client, rotated["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    assert_error(me(client, first["access_token"]), 401, "AUTHENTICATION_REQUIRED")


def test_a_password_change_ends_every_login(client):
    first = register(client).get_json()
    second = login(client, email=first["user"]["email"], password=PASSWORD).get_json()
    changed = client.put(
        "/api/v1/users/me",
        json={"password": "another-long-password"},
        headers=bearer(first["access_token"]),
    )
    assert changed.status_code == 200, changed.get_json()
    assert_error(me(client, first["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    assert_error(me(client, second["access_token"]), 401, "AUTHENTICATION_REQUIRED")
    fresh = login(client, email=first["user"]["email"], password="another-long-password")
    assert me(client, fresh.get_json()["access_token"]).status_code == 200


def test_a_token_without_a_login_family_is_refused(client, app, db):
    from flask_jwt_extended import create_access_token

    user = factories.user(db)
    db.commit()
    with app.app_context():
        token = create_access_token(
            identity=str(user.id), additional_claims={"org": str(user.organization_id)}
        )
    assert_error(me(client, token), 401, "AUTHENTICATION_REQUIRED")


def test_a_role_change_applies_from_the_next_request(client, app, db):
    user = factories.user(db, role="admin")
    db.commit()
    headers = factories.auth_headers(app, user)
    assert client.get("/api/v1/users", headers=headers).status_code == 200
    db.execute(sa.update(User).where(User.id == user.id).values(role="viewer"))
    db.commit()
    assert_error(client.get("/api/v1/users", headers=headers), 403, "FORBIDDEN")


def test_authentication_is_one_query(client, app, db, engine):
    """The active check and both revocation checks are one SELECT per request."""
    user = factories.user(db, role="viewer")
    db.commit()
    headers = factories.auth_headers(app, user)
    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append(statement)

    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        # A viewer may not create a project: refused right after authentication.
        response = client.post("/api/v1/projects", json={"name": "x"}, headers=headers)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    assert_error(response, 403, "FORBIDDEN")
    assert len(statements) == 1, statements


# -- seed 004: who may cancel ------------------------------------------------------------


@pytest.fixture
def team(db, app):
    org = factories.organization(db)
    people = {role: factories.user(db, org, role=role) for role in ("admin", "manager", "member")}
    people["member2"] = factories.user(db, org, role="member")
    db.commit()
    return {
        "org": org,
        "users": people,
        "headers": {name: factories.auth_headers(app, row) for name, row in people.items()},
    }


CANCEL = {
    "build": lambda job_id: ("delete", f"/api/v1/builds/{job_id}"),
    "analysis": lambda job_id: ("delete", f"/api/v1/analyses/{job_id}"),
    "task": lambda job_id: ("post", f"/api/v1/tasks/{job_id}/cancel"),
    "orchestration": lambda job_id: ("post", f"/api/v1/jobs/{job_id}/cancel"),
}


def _job(db, team, kind: str, creator: str) -> uuid.UUID:
    job = factories.job(
        db, team["org"], kind=kind, status="running", created_by_id=team["users"][creator].id
    )
    db.commit()
    return job.id


def _cancel(client, team, kind: str, job_id: uuid.UUID, who: str):
    method, path = CANCEL[kind](job_id)
    return getattr(client, method)(path, headers=team["headers"][who])


@pytest.mark.parametrize("kind", ["build", "analysis", "task", "orchestration"])
def test_a_member_cannot_cancel_someone_elses_job(client, db, team, kind):
    for creator in ("admin", "member2"):
        job_id = _job(db, team, kind, creator)
        assert_error(_cancel(client, team, kind, job_id, "member"), 403, "FORBIDDEN")
        # Still running: the refusal changed nothing.
        status = client.get(f"/api/v1/jobs/{job_id}", headers=team["headers"]["admin"])
        assert status.get_json()["status"] == "running"


@pytest.mark.parametrize("kind", ["build", "analysis"])
@pytest.mark.parametrize(("creator", "who"), [("member", "member"), ("member", "manager"),
                                              ("admin", "manager"), ("manager", "admin")])  # fmt: skip
def test_creators_managers_and_admins_cancel(client, db, team, kind, creator, who):
    job_id = _job(db, team, kind, creator)
    response = _cancel(client, team, kind, job_id, who)
    assert response.status_code == 200, response.get_json()
    status = client.get(f"/api/v1/jobs/{job_id}", headers=team["headers"]["admin"])
    assert status.get_json()["status"] == "cancelled"


def test_expired_revocations_are_purged(sessions, db):
    from datetime import timedelta

    from models import RevokedAccessToken, utcnow
    from orchestration import accounts

    now = utcnow()
    db.add_all(
        [
            RevokedAccessToken(
                jti="gone-" + uuid.uuid4().hex, expires_at=now - timedelta(seconds=1)
            ),
            RevokedAccessToken(
                jti="kept-" + uuid.uuid4().hex, expires_at=now + timedelta(minutes=5)
            ),
        ]
    )
    db.commit()
    assert accounts.purge_revoked_access_tokens(sessions) >= 1
    left = db.scalars(sa.select(RevokedAccessToken.jti)).all()
    assert any(j.startswith("kept-") for j in left)
    assert not any(j.startswith("gone-") for j in left)
