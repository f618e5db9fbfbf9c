"""Two-factor sign-in (seeds 001, 003): TOTP enrollment, requires_2fa + temp_token,
/auth/2fa/verify with a code or a single-use recovery code, rate-limited attempts,
disable, and an organization that requires 2FA."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import jwt
import pyotp
import pytest
import sqlalchemy as sa

from models import Organization, RecoveryCode, User
from orchestration import secrets
from tests.conftest import _make_app
from tests.test_auth import PASSWORD, assert_error, bearer, login, register, unique_ip


def code(secret: str, offset: int = 0) -> str:
    return pyotp.TOTP(secret).at(time.time() + offset)


def sign_in(client, email: str):
    response = login(client, email=email, password=PASSWORD)
    assert response.status_code == 200, response.get_json()
    return response.get_json()


def enroll(client, tokens) -> tuple[str, list[str]]:
    setup = client.post("/api/v1/auth/2fa/setup", json={}, headers=bearer(tokens["access_token"]))
    assert setup.status_code == 200, setup.get_json()
    secret = setup.get_json()["secret"]
    enabled = client.post(
        "/api/v1/auth/2fa/enable",
        json={"code": code(secret)},
        headers=bearer(tokens["access_token"]),
    )
    assert enabled.status_code == 200, enabled.get_json()
    return secret, enabled.get_json()["recovery_codes"]


def verify(client, temp_token: str, **factor):
    # Unknown temp_tokens are counted per address: a fresh one per call.
    return client.post(
        "/api/v1/auth/2fa/verify",
        json={"temp_token": temp_token, **factor},
        environ_base={"REMOTE_ADDR": unique_ip()},
    )


def test_enrollment_then_sign_in_needs_the_code(client, db):
    tokens = register(client).get_json()
    email, h = tokens["user"]["email"], bearer(tokens["access_token"])
    setup = client.post("/api/v1/auth/2fa/setup", json={}, headers=h)
    assert setup.status_code == 200, setup.get_json()
    secret, uri = setup.get_json()["secret"], setup.get_json()["provisioning_uri"]
    assert uri.startswith("otpauth://totp/Baton:") and f"secret={secret}" in uri
    assert "issuer=Baton" in uri
    stored = db.scalar(sa.select(User.totp_secret_encrypted).where(User.email == email))
    assert secret not in stored and secrets.decrypt(stored) == secret
    # Not on until a code is confirmed.
    assert "access_token" in sign_in(client, email)
    wrong = client.post("/api/v1/auth/2fa/enable", json={"code": "000000"}, headers=h)
    if code(secret) != "000000":
        assert_error(wrong, 422, "VALIDATION_ERROR", "code")
    enabled = client.post("/api/v1/auth/2fa/enable", json={"code": code(secret)}, headers=h)
    assert enabled.status_code == 200, enabled.get_json()
    recovery = enabled.get_json()["recovery_codes"]
    assert len(recovery) == 10 == len(set(recovery))
    hashes = db.scalars(
        sa.select(RecoveryCode.code_hash).join(User, User.id == RecoveryCode.user_id).where(User.email == email)
    ).all()  # fmt: skip
    assert len(hashes) == 10 and all(h.startswith("$argon2") for h in hashes)
    assert not any(r.replace("-", "") in h for r in recovery for h in hashes)

    pending = sign_in(client, email)
    assert pending["requires_2fa"] is True and pending["requires_2fa_setup"] is False
    assert "access_token" not in pending and "refresh_token" not in pending
    assert 0 < pending["expires_in"] <= 300
    # The temp_token opens nothing else.
    assert_error(client.get("/api/v1/users/me", headers=bearer(pending["temp_token"])), 401, "AUTHENTICATION_REQUIRED")  # fmt: skip
    assert_error(
        verify(client, pending["temp_token"], code="12345x"), 401, "AUTHENTICATION_REQUIRED"
    )
    done = verify(client, pending["temp_token"], code=code(secret, 30))
    assert done.status_code == 200, done.get_json()
    body = done.get_json()
    assert body["requires_2fa"] is False and body["token_type"] == "bearer"
    assert client.get("/api/v1/users/me", headers=bearer(body["access_token"])).status_code == 200
    # A temp_token completes one sign-in only, and a code works once.
    assert_error(verify(client, pending["temp_token"], code=code(secret, 30)), 401, "AUTHENTICATION_REQUIRED")  # fmt: skip
    again = sign_in(client, email)
    assert_error(verify(client, again["temp_token"], code=code(secret, 30)), 401, "AUTHENTICATION_REQUIRED")  # fmt: skip


def test_recovery_codes_work_once(client):
    tokens = register(client).get_json()
    _, recovery = enroll(client, tokens)
    email = tokens["user"]["email"]
    first = verify(client, sign_in(client, email)["temp_token"], recovery_code=recovery[0].upper())
    assert first.status_code == 200, first.get_json()
    reused = verify(client, sign_in(client, email)["temp_token"], recovery_code=recovery[0])
    assert_error(reused, 401, "AUTHENTICATION_REQUIRED")
    other = verify(client, sign_in(client, email)["temp_token"], recovery_code=recovery[1])
    assert other.status_code == 200


@pytest.mark.parametrize(
    "body",
    [{}, {"code": "1", "recovery_code": "x"}, {"code": ""}, {"code": "1" * 17}],
)
def test_verify_bad_input_is_422(client, body):
    response = verify(client, "t", **body)
    assert_error(response, 422, "VALIDATION_ERROR")


def test_forged_or_expired_temp_tokens_are_refused(client, app):
    tokens = register(client).get_json()
    secret, _ = enroll(client, tokens)
    user_id = tokens["user"]["id"]
    now = datetime.now(UTC)
    claims = {"sub": user_id, "aud": "baton:2fa", "purpose": "verify", "jti": "j1"}
    expired = jwt.encode(
        {**claims, "iat": now - timedelta(minutes=10), "exp": now - timedelta(minutes=5)},
        app.config["JWT_SECRET_KEY"],
        algorithm="HS256",
    )
    forged = jwt.encode({**claims, "exp": now + timedelta(minutes=5)}, "another-key-" * 4, algorithm="HS256")  # fmt: skip
    for token in (expired, forged, tokens["access_token"]):
        assert_error(verify(client, token, code=code(secret, 30)), 401, "AUTHENTICATION_REQUIRED")


def test_failed_attempts_are_rate_limited_per_user(sessions):
    app = _make_app(sessions)
    app.config["BATON_2FA_RATE_LIMIT"] = "3 per minute"
    client = app.test_client()
    tokens = register(client).get_json()
    secret, _ = enroll(client, tokens)  # successes do not count
    email = tokens["user"]["email"]
    wrong = "000000" if code(secret, 30) != "000000" else "111111"
    for _ in range(3):
        # Each from a fresh sign-in (a new temp_token, another address): still one count.
        failed = verify(client, sign_in(client, email)["temp_token"], code=wrong)
        assert_error(failed, 401, "AUTHENTICATION_REQUIRED")
    limited = verify(client, sign_in(client, email)["temp_token"], code=code(secret, 30))
    error = assert_error(limited, 429, "RATE_LIMIT_EXCEEDED")
    assert error["details"][0]["retry_after"] >= 1
    # Another user is not affected.
    other = register(client).get_json()
    assert client.post("/api/v1/auth/2fa/setup", json={}, headers=bearer(other["access_token"])).status_code == 200  # fmt: skip


def test_disable_with_a_code(client):
    tokens = register(client).get_json()
    h = bearer(tokens["access_token"])
    assert_error(client.post("/api/v1/auth/2fa/disable", json={"code": "123456"}, headers=h), 409, "CONFLICT")  # fmt: skip
    secret, _ = enroll(client, tokens)
    wrong = "000000" if code(secret, 30) != "000000" else "111111"
    refused = client.post("/api/v1/auth/2fa/disable", json={"code": wrong}, headers=h)
    assert_error(refused, 401, "AUTHENTICATION_REQUIRED")
    off = client.post("/api/v1/auth/2fa/disable", json={"code": code(secret, 30)}, headers=h)
    assert off.status_code == 200, off.get_json()
    assert "access_token" in sign_in(client, tokens["user"]["email"])
    assert_error(
        client.post("/api/v1/auth/2fa/disable", json={}, headers=h), 422, "VALIDATION_ERROR"
    )


def test_an_organization_can_require_2fa(client, db):
    admin = register(client).get_json()
    h = bearer(admin["access_token"])
    member_email = f"m-{time.time_ns()}@example.com"
    created = client.post(
        "/api/v1/users",
        json={"email": member_email, "password": PASSWORD, "role": "member"},
        headers=h,
    )
    assert created.status_code == 201, created.get_json()
    before = sign_in(client, member_email)  # a login from before the requirement
    turned_on = client.put("/api/v1/organizations/current", json={"require_2fa": True}, headers=h)
    assert turned_on.get_json()["require_2fa"] is True

    pending = sign_in(client, member_email)
    assert pending["requires_2fa"] is True and pending["requires_2fa_setup"] is True
    assert "access_token" not in pending
    # An old login is not renewed without 2FA.
    stale = client.post("/api/v1/auth/refresh", json={"refresh_token": before["refresh_token"]})
    assert_error(stale, 401, "AUTHENTICATION_REQUIRED")
    # The setup temp_token cannot stand in for a code.
    assert_error(
        verify(client, pending["temp_token"], code="123456"), 401, "AUTHENTICATION_REQUIRED"
    )
    setup = client.post("/api/v1/auth/2fa/setup", json={"temp_token": pending["temp_token"]})
    assert setup.status_code == 200, setup.get_json()
    secret = setup.get_json()["secret"]
    enabled = client.post(
        "/api/v1/auth/2fa/enable", json={"temp_token": pending["temp_token"], "code": code(secret)}
    )
    assert enabled.status_code == 200, enabled.get_json()
    body = enabled.get_json()
    assert len(body["recovery_codes"]) == 10 and body["access_token"]
    member_h = bearer(body["access_token"])
    assert client.get("/api/v1/users/me", headers=member_h).status_code == 200
    # The requirement stands: 2FA cannot be turned off.
    off = client.post("/api/v1/auth/2fa/disable", json={"code": code(secret, 30)}, headers=member_h)
    assert_error(off, 403, "FORBIDDEN")
    # The admin has no 2FA yet: the next sign-in asks for setup too.
    assert sign_in(client, admin["user"]["email"])["requires_2fa_setup"] is True
    org_id = admin["user"]["organization_id"]
    assert db.scalar(sa.select(Organization.require_2fa).where(Organization.id == org_id))


@pytest.mark.parametrize(
    "path",
    [
        "/compat/vel-tutor/api/v1/auth/login",
        "/compat/task-assistant/api/v1/auth/login",
        "/compat/orchestrator/v1/auth/login",
        "/compat/phase2/auth/login",
        "/auth/login",
    ],
)
def test_dialect_logins_without_a_second_factor_step_refuse_a_2fa_account(client, path):
    # These documents have no second-factor step: the account is sent to the canonical
    # login, in the dialect's own 401, and no token is issued.
    tokens = register(client).get_json()
    enroll(client, tokens)
    response = client.post(
        path,
        json={"email": tokens["user"]["email"], "password": PASSWORD},
        environ_base={"REMOTE_ADDR": unique_ip()},
    )
    assert response.status_code == 401, response.get_data(as_text=True)
    text = response.get_data(as_text=True)
    assert "/api/v1/auth/login" in text and "token" not in response.get_json()
    assert "access_token" not in response.get_json()
