"""Each document's own rate limits (issue 15): its numbers, in its headers, and its 429.

Seed 000: 100 requests an hour per authenticated user, 5 logins a minute per IP.
Seed 001: 100 requests a minute per IP. Seed 002: 50 a minute per user, 100 a minute and
1,000 an hour per tenant, its auth endpoints 10 per 15 minutes per IP. Seed 003: per
organization per hour by subscription tier (100 / 1,000 / 10,000). Seed 004: 60 a minute
per user (at its base and at the root: one bucket). Every dialect bucket comes on top of
Baton's per-user and per-organization ones, each request counted once in each.
"""

from __future__ import annotations

import uuid

import pytest

from tests import factories

VT = "/compat/vel-tutor/api/v1"
CC = "/compat/command-center/api/v1"
TA = "/compat/task-assistant/api/v1"
ORCH = "/compat/orchestrator/v1"
PHASE2 = "/compat/phase2"


@pytest.fixture(autouse=True)
def _documents_limits(app):
    """The documents' own numbers (tests/conftest.py gives other tests roomy ones)."""
    app.config["BATON_DIALECT_RATE_LIMITS"] = {}


@pytest.fixture
def acme(app, db):
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    db.commit()
    return {"org": org, "user": user, "headers": factories.auth_headers(app, user)}


def _limit_headers(response, limit: int, remaining: int | None = None) -> None:
    assert int(response.headers["X-RateLimit-Limit"]) == limit, dict(response.headers)
    if remaining is not None:
        assert int(response.headers["X-RateLimit-Remaining"]) == remaining
    assert int(response.headers["X-RateLimit-Reset"]) > 0


def _exhaust(client, url: str, limit: int, **kwargs):
    answers = [client.get(url, **kwargs) for _ in range(limit)]
    assert all(a.status_code != 429 for a in answers)
    _limit_headers(answers[0], limit, limit - 1)
    _limit_headers(answers[-1], limit, 0)
    over = client.get(url, **kwargs)
    assert over.status_code == 429, over.get_json()
    assert int(over.headers["Retry-After"]) > 0
    return over


def test_seed_000_100_an_hour_per_authenticated_user(client, acme):
    over = _exhaust(client, f"{VT}/tasks", 100, headers=acme["headers"])
    assert over.headers["X-RateLimit-Window"] == "3600"
    body = over.get_json()
    assert body["code"] == "RATE_LIMIT_EXCEEDED" and set(body) == {
        "error", "code", "details", "timestamp"
    }  # fmt: skip
    # "(authenticated)": the public health check is not counted, nor refused.
    assert client.get(f"{VT}/health").status_code == 200
    assert client.get("/api/v1/health").status_code == 200


def test_seed_000_5_auth_attempts_a_minute(client):
    bad = {"email": "nobody@example.com", "password": "wrong"}
    # Per IP: an address of its own, so earlier logins from 127.0.0.1 do not count here.
    where = {"REMOTE_ADDR": f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.7"}
    answers = [client.post(f"{VT}/auth/login", json=bad, environ_base=where) for _ in range(5)]
    assert [a.status_code for a in answers] == [401] * 5
    over = client.post(f"{VT}/auth/login", json=bad, environ_base=where)
    assert over.status_code == 429 and over.get_json()["code"] == "RATE_LIMIT_EXCEEDED"
    assert int(over.headers["Retry-After"]) > 0


def test_seed_001_100_a_minute_per_ip(client, acme):
    over = _exhaust(client, f"{CC}/projects", 100, headers=acme["headers"])
    error = over.get_json()["error"]
    assert error["code"] == "RATE_LIMIT_EXCEEDED" and set(error) == {
        "code", "message", "details", "request_id"
    }  # fmt: skip
    # Per IP: another user from the same address is counted in the same bucket.
    assert client.get(f"{CC}/projects").status_code == 429
    # The canonical API and the other dialects are not this document's bucket.
    assert client.get("/api/v1/health").status_code == 200


def test_seed_002_50_a_minute_per_user_and_its_429(client, acme):
    over = _exhaust(client, f"{TA}/tasks", 50, headers=acme["headers"])
    body = over.get_json()
    retry = int(over.headers["Retry-After"])
    assert body["retry_after"] == retry
    assert body["detail"] == f"Rate limit exceeded. Try again in {retry} seconds."


def test_seed_002_every_response_carries_the_headers(client, acme):
    """Answers the limiter never counts (unknown route, 405, the edge's 415 and 414) still
    say where the caller stands: the user's bucket, unchanged by them."""
    h = acme["headers"]
    for _ in range(3):
        assert client.get(f"{TA}/tasks", headers=h).status_code == 200
    uncounted = [
        client.get(f"{TA}/no-such-thing", headers=h),
        client.delete(f"{TA}/tasks", headers=h),
        client.post(f"{TA}/tasks", data="x", content_type="text/plain", headers=h),
        client.get(f"{TA}/tasks?q=" + "x" * 5000, headers=h),
    ]
    assert [a.status_code for a in uncounted] == [404, 405, 415, 414]
    for answer in uncounted:
        _limit_headers(answer, 50, 47)
    _limit_headers(client.get(f"{TA}/tasks", headers=h), 50, 46)


def test_seed_002_tenant_limit_counts_every_user(app, client, db, acme):
    app.config["BATON_DIALECT_RATE_LIMITS"] = {
        "task_assistant": {"organization": "4 per minute;1000 per hour"}
    }
    other = factories.user(db, acme["org"], role="member")
    db.commit()
    others = factories.auth_headers(app, other)
    assert [client.get(f"{TA}/tasks", headers=h).status_code
            for h in (acme["headers"], others) * 2] == [200] * 4  # fmt: skip
    assert client.get(f"{TA}/tasks", headers=others).status_code == 429


def test_seed_002_auth_endpoints_10_per_15_minutes_per_ip(app, client):
    answers = [
        client.post(
            f"{TA}/auth/register",
            json={
                "email": f"r{uuid.uuid4().hex[:10]}@example.com",
                "password": "Correct-Horse-9",
                "tenant_name": f"T{i}",
            },
        )  # fmt: skip
        for i in range(10)
    ]
    assert all(a.status_code != 429 for a in answers), [a.get_json() for a in answers]
    _limit_headers(answers[0], 10)
    assert int(answers[0].headers["X-RateLimit-Window"]) == 900
    # Login shares the bucket: the eleventh auth request from this address is refused.
    login = client.post(f"{TA}/auth/login", json={"email": "x@example.com", "password": "x"})
    assert login.status_code == 429 and "retry_after" in login.get_json()


@pytest.mark.parametrize(("tier", "limit"), [("free", 100), ("pro", 1000), ("enterprise", 10000)])
def test_seed_003_per_tier_per_hour(client, db, acme, tier, limit):
    acme["org"].subscription_tier = tier
    db.commit()
    response = client.get(f"{ORCH}/projects", headers=acme["headers"])
    _limit_headers(response, limit, limit - 1)
    assert response.headers["X-RateLimit-Window"] == "3600"


def test_seed_003_free_tier_429(client, acme):
    over = _exhaust(client, f"{ORCH}/projects", 100, headers=acme["headers"])
    assert over.get_json()["error"]["code"] == "RATE_LIMIT_EXCEEDED"
    assert over.headers["X-RateLimit-Window"] == "3600"


def test_seed_004_60_a_minute_per_user_at_base_and_root(client, acme):
    h = acme["headers"]
    first = client.get(f"{PHASE2}/api/build/", headers=h)
    _limit_headers(first, 60, 59)
    root = client.get("/api/build/", headers=h)
    _limit_headers(root, 60, 58)
    for _ in range(58):
        assert client.get("/api/build/", headers=h).status_code == 200
    over = client.get(f"{PHASE2}/api/build/", headers=h)
    assert over.status_code == 429
    assert over.get_json()["error"] == "rate_limit_exceeded"


def test_a_request_a_dialect_bucket_refuses_spends_no_quota(app, client, db, acme):
    """Baton's buckets and the monthly quota are counted first, in one script; a dialect's
    bucket (counted after, by Flask-Limiter) that refuses the request gives the spend back."""
    from orchestration import quotas

    app.config["BATON_DIALECT_RATE_LIMITS"] = {"task_assistant": {"user": "2 per minute"}}
    answers = [client.get(f"{TA}/tasks", headers=acme["headers"]) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    _limit_headers(answers[1], 2, 0)  # the dialect's bucket, not Baton's roomier one
    assert quotas.used(acme["org"].id) == 2
