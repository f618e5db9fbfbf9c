"""Auth: register, login (email/username), refresh rotation + reuse, logout, rate limit."""

from __future__ import annotations

import uuid

import pytest
import sqlalchemy as sa

from models import RefreshToken, RevokedAccessToken
from tests import factories

PASSWORD = "s3cret-passw0rd"


def unique_ip() -> str:
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["request_id"]
    assert error["message"]
    assert "Traceback" not in response.get_data(as_text=True)
    if field:
        fields = [d["field"] for d in error["details"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), error
    return error


def register(client, **overrides):
    suffix = uuid.uuid4().hex[:8]
    body = {
        "email": f"Owner-{suffix}@Example.com",
        "password": PASSWORD,
        "full_name": "Owner Person",
        "username": f"owner_{suffix}",
        "organization_name": f"Acme {suffix}",
        **overrides,
    }
    return client.post(
        "/api/v1/auth/register", json=body, environ_base={"REMOTE_ADDR": unique_ip()}
    )


def login(client, ip: str | None = None, **body):
    return client.post(
        "/api/v1/auth/login", json=body, environ_base={"REMOTE_ADDR": ip or unique_ip()}
    )


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_register_then_login_by_email_and_username_then_me(client):
    created = register(client)
    assert created.status_code == 201, created.get_json()
    body = created.get_json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] > 0
    assert body["access_token"] and body["refresh_token"]
    user = body["user"]
    assert user["role"] == "admin"
    assert user["email"] == user["email"].lower()  # emails are stored normalised
    assert uuid.UUID(user["organization_id"])
    assert "password" not in user and "password_hash" not in user

    by_email = login(client, email=user["email"].upper(), password=PASSWORD)
    assert by_email.status_code == 200, by_email.get_json()
    by_username = login(client, username=user["username"], password=PASSWORD)
    assert by_username.status_code == 200, by_username.get_json()
    for response in (by_email, by_username):
        data = response.get_json()
        assert set(data["user"]) >= {"id", "email", "username", "full_name", "organization_id"}
        assert data["user"]["id"] == user["id"]

    me = client.get("/api/v1/users/me", headers=bearer(by_username.get_json()["access_token"]))
    assert me.status_code == 200
    assert me.get_json()["id"] == user["id"]
    assert me.get_json()["organization_id"] == user["organization_id"]

    current = client.get(
        "/api/v1/organizations/current", headers=bearer(body["access_token"])
    ).get_json()
    assert current["id"] == user["organization_id"]
    assert current["name"].startswith("Acme ")
    assert current["slug"].startswith("acme-")


def test_register_accepts_tenant_name(client):
    """Seed 002 calls the organization a tenant."""
    suffix = uuid.uuid4().hex[:8]
    response = client.post(
        "/api/v1/auth/register",
        json={"email": f"t-{suffix}@example.com", "password": PASSWORD, "tenant_name": "Tenant"},
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    assert response.status_code == 201, response.get_json()
    assert response.get_json()["user"]["username"] is None
    org = client.get(
        "/api/v1/organizations/current",
        headers=bearer(response.get_json()["access_token"]),
    ).get_json()
    assert org["name"] == "Tenant"


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"email": "not-an-email"}, "email"),
        ({"password": "short"}, "password"),
        ({"organization_name": ""}, "organization_name"),
        ({"username": "a b"}, "username"),
        ({"role": "admin"}, "role"),  # unknown fields are refused, not ignored
    ],
)
def test_register_bad_input(client, overrides, field):
    assert_error(register(client, **overrides), 422, "VALIDATION_ERROR", field)


def test_register_needs_organization_and_password(client):
    response = client.post(
        "/api/v1/auth/register",
        json={"email": "x@example.com"},
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    error = assert_error(response, 422, "VALIDATION_ERROR", "password")
    assert any(d["field"] == "organization_name" for d in error["details"])


def test_register_duplicate_email_or_username_is_409(client):
    first = register(client).get_json()["user"]
    assert_error(register(client, email=first["email"]), 409, "CONFLICT", "email")
    assert_error(register(client, username=first["username"]), 409, "CONFLICT", "username")


def test_bad_credentials_same_answer_whether_user_exists(client, db):
    org = factories.organization(db)
    user = factories.user(db, org)
    db.commit()
    wrong_password = login(client, email=user.email, password="wrong-password")
    no_such_user = login(client, email="nobody@example.com", password="wrong-password")
    no_such_username = login(client, username="nobody_here", password="wrong-password")
    messages = {
        assert_error(r, 401, "AUTHENTICATION_REQUIRED")["message"]
        for r in (wrong_password, no_such_user, no_such_username)
    }
    assert len(messages) == 1


def test_inactive_user_cannot_login(client, db):
    user = factories.user(db, is_active=False)
    db.commit()
    assert_error(
        login(client, email=user.email, password=factories.DEFAULT_PASSWORD),
        401,
        "AUTHENTICATION_REQUIRED",
    )


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"password": "x"}, "email"),
        ({"email": "a@example.com"}, "password"),
        ({"email": 5, "password": "x"}, "email"),
    ],
)
def test_login_bad_input(client, body, field):
    assert_error(login(client, **body), 422, "VALIDATION_ERROR", field)


def test_login_non_json_body(client):
    response = client.post(
        "/api/v1/auth/login",
        data="{not json",
        content_type="application/json",
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    assert response.status_code in (400, 422)
    assert response.get_json()["error"]["code"] == "VALIDATION_ERROR"
    text_body = client.post(
        "/api/v1/auth/login",
        data="email=a&password=b",
        content_type="text/plain",
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    # A body that is not JSON is refused for what it is (issue 9), not as a missing field.
    assert_error(text_body, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type")


def test_body_over_one_mib_is_413(client):
    response = client.post(
        "/api/v1/auth/login",
        data='{"email": "' + "a" * (1024 * 1024 + 10) + '"}',
        content_type="application/json",
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    assert response.status_code == 413
    assert response.get_json()["error"]["code"] == "PAYLOAD_TOO_LARGE"


def test_login_rate_limit_sixth_attempt_is_429(client):
    ip = unique_ip()
    for attempt in range(5):
        response = login(client, ip=ip, email="nobody@example.com", password="wrong-password")
        assert response.status_code == 401, attempt
        assert response.headers["X-RateLimit-Limit"]
        assert "X-RateLimit-Remaining" in response.headers
        assert "X-RateLimit-Reset" in response.headers
    blocked = login(client, ip=ip, email="nobody@example.com", password="wrong-password")
    assert_error(blocked, 429, "RATE_LIMIT_EXCEEDED")
    assert int(blocked.headers["Retry-After"]) > 0
    # Another address is not affected.
    other = login(client, email="nobody@example.com", password="wrong-password")
    assert other.status_code == 401


def test_refresh_rotates_and_reuse_revokes_the_family(client, db):
    tokens = register(client).get_json()
    first_refresh = tokens["refresh_token"]

    rotated = client.post("/api/v1/auth/refresh", json={"refresh_token": first_refresh})
    assert rotated.status_code == 200, rotated.get_json()
    second = rotated.get_json()
    assert second["refresh_token"] != first_refresh
    assert second["access_token"] != tokens["access_token"]
    assert client.get("/api/v1/users/me", headers=bearer(second["access_token"])).status_code == 200

    # Replaying the spent token: refused, and the newest token of the login dies with it.
    reuse = client.post("/api/v1/auth/refresh", json={"refresh_token": first_refresh})
    assert_error(reuse, 401, "AUTHENTICATION_REQUIRED")
    after = client.post("/api/v1/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert_error(after, 401, "AUTHENTICATION_REQUIRED")

    user_id = uuid.UUID(tokens["user"]["id"])
    rows = db.scalars(sa.select(RefreshToken).where(RefreshToken.user_id == user_id)).all()
    assert len(rows) == 2
    assert len({r.family_id for r in rows}) == 1
    assert all(r.revoked_at is not None for r in rows)


def test_refresh_families_are_independent(client):
    user = register(client).get_json()["user"]
    laptop = login(client, email=user["email"], password=PASSWORD).get_json()
    phone = login(client, email=user["email"], password=PASSWORD).get_json()
    client.post("/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})
    client.post("/api/v1/auth/refresh", json={"refresh_token": laptop["refresh_token"]})  # reuse
    still_ok = client.post("/api/v1/auth/refresh", json={"refresh_token": phone["refresh_token"]})
    assert still_ok.status_code == 200


@pytest.mark.parametrize("token", ["garbage", "a.b.c", ""])
def test_refresh_rejects_invalid_tokens(client, token):
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": token})
    assert response.status_code in (401, 422)
    assert response.get_json()["error"]["code"] in ("AUTHENTICATION_REQUIRED", "VALIDATION_ERROR")


def test_refresh_rejects_an_access_token(client):
    tokens = register(client).get_json()
    response = client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["access_token"]})
    assert_error(response, 401, "AUTHENTICATION_REQUIRED")


def test_refresh_token_is_not_a_bearer_token(client):
    tokens = register(client).get_json()
    response = client.get("/api/v1/users/me", headers=bearer(tokens["refresh_token"]))
    assert_error(response, 401, "AUTHENTICATION_REQUIRED")


def test_logout_revokes_access_and_refresh(client, db):
    tokens = register(client).get_json()
    headers = bearer(tokens["access_token"])
    out = client.post(
        "/api/v1/auth/logout", json={"refresh_token": tokens["refresh_token"]}, headers=headers
    )
    assert out.status_code == 200, out.get_json()
    assert out.get_json() == {"message": "Successfully logged out"}
    assert db.scalar(sa.select(sa.func.count()).select_from(RevokedAccessToken)) >= 1

    assert_error(client.get("/api/v1/users/me", headers=headers), 401, "AUTHENTICATION_REQUIRED")
    assert_error(
        client.post("/api/v1/auth/logout", headers=headers), 401, "AUTHENTICATION_REQUIRED"
    )
    assert_error(
        client.post("/api/v1/auth/refresh", json={"refresh_token": tokens["refresh_token"]}),
        401,
        "AUTHENTICATION_REQUIRED",
    )


def test_logout_without_body_keeps_other_sessions(client):
    user = register(client).get_json()["user"]
    first = login(client, email=user["email"], password=PASSWORD).get_json()
    second = login(client, email=user["email"], password=PASSWORD).get_json()
    assert (
        client.post("/api/v1/auth/logout", headers=bearer(first["access_token"])).status_code == 200
    )
    assert client.get("/api/v1/users/me", headers=bearer(second["access_token"])).status_code == 200
    refreshed = client.post("/api/v1/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert refreshed.status_code == 200  # only the access token was revoked


def test_logout_requires_a_token(client):
    assert_error(client.post("/api/v1/auth/logout"), 401, "AUTHENTICATION_REQUIRED")
    assert_error(
        client.post("/api/v1/auth/logout", headers={"Authorization": "Bearer nope"}),
        401,
        "AUTHENTICATION_REQUIRED",
    )


def test_logout_with_invalid_refresh_token_is_422(client):
    tokens = register(client).get_json()
    response = client.post(
        "/api/v1/auth/logout",
        json={"refresh_token": "garbage"},
        headers=bearer(tokens["access_token"]),
    )
    assert_error(response, 422, "VALIDATION_ERROR", "refresh_token")


def test_token_claims_carry_role_and_permissions(client, app):
    from flask_jwt_extended import decode_token

    tokens = register(client).get_json()
    with app.app_context():
        claims = decode_token(tokens["access_token"])
    assert claims["role"] == "admin"
    assert "user:admin" in claims["permissions"]
    assert claims["org"] == tokens["user"]["organization_id"]
    assert claims["sub"] == tokens["user"]["id"]


def test_the_bearer_check_decides_as_flask_jwt_extended_does(app, db):
    """api.security.verify_bearer_token parses a token once; for every kind of token it
    accepts and refuses exactly what ``verify_jwt_in_request`` does (the same error
    class), and leaves the same claims and header for ``get_jwt()``."""
    from datetime import timedelta

    import jwt as pyjwt
    from flask_jwt_extended import (
        create_access_token,
        create_refresh_token,
        get_jwt,
        get_jwt_header,
        verify_jwt_in_request,
    )

    from api.auth.tokens import access_token_for
    from api.security import verify_bearer_token

    org = factories.organization(db)
    user = factories.user(db, org, role="member")
    gone = factories.user(db, org, role="member", is_active=False)
    db.commit()
    secret = app.config["JWT_SECRET_KEY"]

    def access(row=user, **kw):  # type: ignore[no-untyped-def]
        return access_token_for(
            user_id=str(row.id),
            organization_id=kw.pop("org", str(row.organization_id)),
            role=row.role,
            family=str(uuid.uuid4()),
        )

    with app.app_context():
        now = pyjwt.decode(access(), options={"verify_signature": False})
        tokens = {
            "valid": access(),
            "deactivated user": access(gone),
            "another organization": access(org=str(uuid.uuid4())),
            "expired": create_access_token(
                identity=str(user.id), expires_delta=timedelta(seconds=-30)
            ),
            "refresh": create_refresh_token(identity=str(user.id)),
            "wrong key": pyjwt.encode(now, "not-the-secret-" * 3, algorithm="HS256"),
            "alg none": pyjwt.encode(now, None, algorithm="none"),
            "no subject": pyjwt.encode(
                {k: v for k, v in now.items() if k != "sub"}, secret, algorithm="HS256"
            ),
            "no type": pyjwt.encode(
                {k: v for k, v in now.items() if k != "type"}, secret, algorithm="HS256"
            ),
            "garbage": "abc.def.ghi",
            "not base64": now["jti"] + "!.e30.x",
        }
    headers = {name: {"Authorization": f"Bearer {token}"} for name, token in tokens.items()}
    headers |= {
        "no header": {},
        "other scheme": {"Authorization": f"Token {tokens['valid']}"},
        "two parts": {"Authorization": f"Bearer {tokens['valid']} extra"},
        "two bearers": {"Authorization": f"Bearer {tokens['valid']}, Bearer x"},
    }

    def outcome(check, method, sent):  # type: ignore[no-untyped-def]
        with app.test_request_context("/api/v1/users/me", method=method, headers=sent):
            try:
                result = check()
            except Exception as exc:  # noqa: BLE001 - the class is the outcome
                return ("refused", type(exc))
            if not result:
                return ("exempt",)
            return ("accepted", dict(get_jwt()), dict(get_jwt_header()))

    accepted = 0
    for name, sent in headers.items():
        for method in ("POST", "OPTIONS"):
            ours = outcome(verify_bearer_token, method, sent)
            assert ours == outcome(verify_jwt_in_request, method, sent), (name, method)
            accepted += ours[0] == "accepted"
    assert accepted == 2  # "valid" and "no type" (the library's default type is access)


def test_the_bearer_check_remembers_only_a_verified_signature_and_checks_claims_each_time():
    """api.security's decoder remembers a token whose signature it verified (the same
    token comes with every request) and nothing else: the claims (expiry...) are validated
    on every decode, a failed signature is refused every time, a changed key misses the
    cache, and each caller gets a header of its own."""
    import time

    import jwt as pyjwt

    from api.security import _decoder

    secret = "s" * 40
    token = pyjwt.encode({"sub": "u", "exp": int(time.time()) + 60}, secret, "HS256")
    hits = _decoder._jws._verified.cache_info().hits
    first = _decoder.decode_complete(token, secret, algorithms=["HS256"])
    again = _decoder.decode_complete(token, secret, algorithms=["HS256"])
    assert _decoder._jws._verified.cache_info().hits == hits + 1
    assert first == again and first["payload"] == {"sub": "u", "exp": first["payload"]["exp"]}
    assert first["header"] is not again["header"]
    # Remembered, yet expired for a stricter clock: the claims are checked again.
    with pytest.raises(pyjwt.ExpiredSignatureError):
        _decoder.decode_complete(token, secret, algorithms=["HS256"], leeway=-120)
    expired = pyjwt.encode({"sub": "u", "exp": int(time.time()) - 10}, secret, "HS256")
    for _ in range(2):
        with pytest.raises(pyjwt.ExpiredSignatureError):
            _decoder.decode_complete(expired, secret, algorithms=["HS256"])
    with pytest.raises(pyjwt.InvalidSignatureError):  # another key: not the cached answer
        _decoder.decode_complete(token, "k" * 40, algorithms=["HS256"])
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(pyjwt.InvalidSignatureError):
            _decoder.decode_complete(forged, secret, algorithms=["HS256"])
    with pytest.raises(pyjwt.InvalidAlgorithmError):
        _decoder.decode_complete(token, secret, algorithms=["HS512"])


def test_the_token_check_on_an_engine_reads_the_live_row_and_pools_no_autocommit(database_url):
    """accounts.live_session on an engine-bound factory (every API process) reads through a
    pooled driver connection in autocommit: the same answers as the ORM path (active user,
    role, quota, block limit; a logged-out token, a revoked login, a deactivated user are
    refused), and the connection goes back to the pool out of autocommit."""
    from datetime import timedelta

    from models import User
    from models.base import utcnow
    from models.db import get_engine, session_factory, transaction
    from orchestration import accounts

    sessions = session_factory(database_url)
    with transaction(sessions) as s:
        org = factories.organization(s, api_quota_limit=1234)
        user = factories.user(s, org, role="member")
        factories.budget_limit(s, org, action_on_exceed="block")
        revoked_family, gone_jti = uuid.uuid4(), uuid.uuid4().hex
        s.add(RevokedAccessToken(jti=gone_jti, expires_at=utcnow() + timedelta(hours=1)))
        s.add(
            RefreshToken(
                jti=uuid.uuid4().hex,
                user_id=user.id,
                family_id=revoked_family,
                expires_at=utcnow() + timedelta(days=1),
                revoked_at=utcnow(),
            )
        )

    def check(**kw):  # type: ignore[no-untyped-def]
        args = {"user_id": user.id, "jti": uuid.uuid4().hex, "family_id": uuid.uuid4(), **kw}
        return accounts.live_session(sessions, **args)

    live = check()
    assert live == accounts.LiveSession(
        organization_id=org.id, role="member", api_quota_limit=1234, has_block_limits=True
    )
    assert isinstance(live.organization_id, uuid.UUID)
    assert check(jti=gone_jti) is None
    assert check(family_id=revoked_family) is None
    assert check(user_id=uuid.uuid4()) is None
    with transaction(sessions) as s:
        s.execute(sa.update(User).where(User.id == user.id).values(is_active=False))
    assert check() is None
    with get_engine(database_url).connect() as conn:  # the pool's connection, as handed out
        assert conn.connection.driver_connection.autocommit is False
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
