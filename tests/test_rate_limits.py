"""Rate limits on real Redis: per user across routes, per organization, per endpoint (seed
004), the 429 envelope with ``retry_after`` (seed 002), ``X-RateLimit-Window`` (seed 003),
and every key under BATON_REDIS_PREFIX."""

from __future__ import annotations

import os

import pytest
import redis

from tests import factories
from tests.conftest import _make_app
from tests.test_auth import assert_error


@pytest.fixture
def limited(sessions):
    def make(**config):
        app = _make_app(sessions)
        app.config.update(config)
        return app, app.test_client()

    return make


@pytest.fixture
def org_users(db):
    org = factories.organization(db)
    users = [factories.user(db, org, role="member") for _ in range(2)]
    other = factories.user(db, role="member")
    db.commit()
    return {"org": org, "users": users, "other": other}


def assert_limited(response, window: int) -> dict:
    error = assert_error(response, 429, "RATE_LIMIT_EXCEEDED")
    detail = error["details"][0]
    assert 1 <= detail["retry_after"] <= window
    assert detail["window_seconds"] == window
    assert int(response.headers["Retry-After"]) == detail["retry_after"]
    assert response.headers["X-RateLimit-Remaining"] == "0"
    return detail


def test_one_bucket_per_user_across_every_route(limited, org_users):
    app, client = limited(BATON_USER_RATE_LIMIT="5 per minute")
    h = factories.auth_headers(app, org_users["users"][0])
    paths = ["/api/v1/users/me", "/api/v1/organizations/current", "/api/v1/projects"] * 2
    for n, path in enumerate(paths[:5]):
        response = client.get(path, headers=h)
        assert response.status_code == 200, response.get_json()
        assert response.headers["X-RateLimit-Limit"] == "5"
        assert response.headers["X-RateLimit-Remaining"] == str(4 - n)
        assert response.headers["X-RateLimit-Window"] == "60"
        assert int(response.headers["X-RateLimit-Reset"]) > 0
    detail = assert_limited(client.get(paths[5], headers=h), 60)
    assert detail["limit"] == 5 and detail["scope"] == "user"
    # Another user of the same organization has a bucket of their own.
    other = factories.auth_headers(app, org_users["users"][1])
    assert client.get("/api/v1/users/me", headers=other).status_code == 200


def test_one_bucket_per_organization(limited, org_users):
    app, client = limited(BATON_USER_RATE_LIMIT="100 per minute", BATON_ORG_RATE_LIMIT="4/hour")
    first, second = (factories.auth_headers(app, u) for u in org_users["users"])
    for h in (first, first, second, second):
        assert client.get("/api/v1/users/me", headers=h).status_code == 200
    detail = assert_limited(client.get("/api/v1/projects", headers=second), 3600)
    assert detail["scope"] == "organization"
    assert_limited(client.get("/api/v1/users/me", headers=first), 3600)
    # Another organization is not affected.
    outsider = factories.auth_headers(app, org_users["other"])
    assert client.get("/api/v1/users/me", headers=outsider).status_code == 200


def test_one_script_counts_both_buckets_and_the_quota_and_a_refused_request_spends_none(
    limited, org_users
):
    """One script counts the user's and the organization's buckets and spends the monthly
    quota: one round trip a request. A request a bucket refuses spends no quota."""
    from orchestration import quotas

    app, client = limited(BATON_USER_RATE_LIMIT="100 per minute", BATON_ORG_RATE_LIMIT="3/hour")
    h = factories.auth_headers(app, org_users["users"][0])
    assert client.get("/api/v1/users/me", headers=h).status_code == 200  # scripts loaded
    commands = []
    original = redis.Redis.execute_command
    redis.Redis.execute_command = lambda self, *a, **kw: (  # type: ignore[method-assign]
        commands.append(a[0]) or original(self, *a, **kw)
    )
    try:
        assert client.get("/api/v1/users/me", headers=h).status_code == 200
    finally:
        redis.Redis.execute_command = original  # type: ignore[method-assign]
    assert commands == ["EVALSHA"]
    assert quotas.used(org_users["org"].id) == 2
    assert client.get("/api/v1/users/me", headers=h).status_code == 200
    detail = assert_limited(client.get("/api/v1/projects", headers=h), 3600)
    assert detail["scope"] == "organization"
    assert quotas.used(org_users["org"].id) == 3  # the refused request's spend given back


def test_a_request_refused_by_the_users_bucket_counts_in_no_later_bucket(limited, org_users):
    """As Flask-Limiter's first breach: the organization's bucket (counted after the
    user's, same window) does not count a request the user's bucket refused."""
    app, client = limited(BATON_USER_RATE_LIMIT="2 per minute", BATON_ORG_RATE_LIMIT="3/minute")
    first, second = (factories.auth_headers(app, u) for u in org_users["users"])
    for _ in range(2):
        assert client.get("/api/v1/users/me", headers=first).status_code == 200
    assert assert_limited(client.get("/api/v1/users/me", headers=first), 60)["scope"] == "user"
    response = client.get("/api/v1/users/me", headers=second)
    assert response.status_code == 200  # the organization's third, not its fourth
    assert response.headers["X-RateLimit-Remaining"] == "1"  # the user's bucket: 2, 1 left
    detail = assert_limited(client.get("/api/v1/users/me", headers=second), 60)
    assert detail["scope"] == "organization" and detail["limit"] == 3


def test_a_limit_of_several_windows_counts_each(limited, org_users):
    """``BATON_ORG_RATE_LIMIT="100 per minute;3 per hour"``: two buckets, as Flask-Limiter
    reads such a value; the one that runs out refuses, with its own window."""
    app, client = limited(BATON_ORG_RATE_LIMIT="100 per minute;3 per hour")
    h = factories.auth_headers(app, org_users["users"][0])
    answers = _count_users_me(client, h, 4)
    assert [a.status_code for a in answers[:3]] == [200, 200, 200]
    detail = assert_limited(answers[3], 3600)
    assert detail["scope"] == "organization" and detail["limit"] == 3


def test_an_unreadable_or_empty_limit_is_not_applied(limited, org_users, caplog):
    """As Flask-Limiter treats a limit it cannot read: logged, and requests go on."""
    app, client = limited(BATON_USER_RATE_LIMIT="lots", BATON_ORG_RATE_LIMIT="")
    h = factories.auth_headers(app, org_users["users"][0])
    with caplog.at_level("ERROR", logger="api.ratelimits"):
        answers = _count_users_me(client, h, 2)
    assert [a.status_code for a in answers] == [200, 200]
    assert "X-RateLimit-Limit" not in answers[0].headers
    assert any("'lots'" in r.getMessage() for r in caplog.records)


def _count_users_me(client, headers, times: int) -> list:  # type: ignore[no-untyped-def]
    return [client.get("/api/v1/users/me", headers=headers) for _ in range(times)]


def test_without_redis_the_buckets_count_in_the_process(sessions, org_users):
    """The embedded mode's storage (``memory://``): the same buckets, headers and 429."""
    from limits.storage import MemoryStorage

    from api.extensions import limiter

    app = _make_app(sessions, RATELIMIT_STORAGE_URI="memory://")
    app.config.update(BATON_USER_RATE_LIMIT="2 per minute")
    assert isinstance(limiter.storage, MemoryStorage)
    h = factories.auth_headers(app, org_users["users"][0])
    answers = _count_users_me(app.test_client(), h, 3)
    assert [a.status_code for a in answers[:2]] == [200, 200]
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:2]] == ["1", "0"]
    assert assert_limited(answers[2], 60)["scope"] == "user"


def test_an_unreachable_redis_counts_in_memory_and_still_refuses(sessions, org_users, caplog):
    """The rate-limit storage's Redis down (RATELIMIT_IN_MEMORY_FALLBACK_ENABLED): the
    buckets count in the process, with the same headers and 429, and say so once."""
    from tests.processes import free_port

    closed = free_port()
    app = _make_app(sessions, RATELIMIT_STORAGE_URI=f"baton+redis://127.0.0.1:{closed}/0")
    app.config.update(BATON_USER_RATE_LIMIT="2 per minute")
    h = factories.auth_headers(app, org_users["users"][0])
    with caplog.at_level("WARNING", logger="api.ratelimits"):
        answers = _count_users_me(app.test_client(), h, 3)
    assert [a.status_code for a in answers[:2]] == [200, 200], answers[0].get_json()
    assert [a.headers["X-RateLimit-Remaining"] for a in answers[:2]] == ["1", "0"]
    assert assert_limited(answers[2], 60)["scope"] == "user"
    warnings = [r for r in caplog.records if "counting in memory" in r.getMessage()]
    assert len(warnings) == 1
    from api.extensions import limiter

    assert limiter.storage.fallback.active()  # Redis is tried again after a pause


@pytest.mark.parametrize(("path", "limit"), [("/api/v1/builds", 10), ("/api/v1/analyses", 5)])
def test_seed_004_endpoint_limits(limited, org_users, path, limit):
    app, client = limited()
    h = factories.auth_headers(app, org_users["users"][0])
    for _ in range(limit):
        # An invalid body still spends an attempt, and starts no job.
        response = client.post(path, json={"project_name": "p; ls"}, headers=h)
        assert_error(response, 422, "VALIDATION_ERROR")
        assert response.headers["X-RateLimit-Limit"] == str(limit)
    assert_limited(client.post(path, json={"project_name": "p"}, headers=h), 60)
    # Reading the list is not creating: only the user's overall bucket applies.
    listed = client.get(path, headers=h)
    assert listed.status_code == 200
    assert listed.headers["X-RateLimit-Limit"] == "600"
    # Another user can still create.
    other = factories.auth_headers(app, org_users["users"][1])
    response = client.post(path, json={"project_name": "p; ls"}, headers=other)
    assert response.status_code == 422


def test_anonymous_callers_are_counted_per_ip(limited):
    _, client = limited(BATON_USER_RATE_LIMIT="3 per minute")

    def refresh(ip: str):
        body = {"refresh_token": "not-a-token"}
        return client.post("/api/v1/auth/refresh", json=body, environ_base={"REMOTE_ADDR": ip})

    for _ in range(3):
        assert_error(refresh("10.9.8.7"), 401, "AUTHENTICATION_REQUIRED")
    assert_limited(refresh("10.9.8.7"), 60)
    assert_error(refresh("10.9.8.6"), 401, "AUTHENTICATION_REQUIRED")


def test_every_limiter_key_is_under_the_redis_prefix(limited, org_users):
    app, client = limited()
    user = org_users["users"][0]
    assert (
        client.get("/api/v1/users/me", headers=factories.auth_headers(app, user)).status_code == 200
    )
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        keys = [k.decode() for k in store.scan_iter(match=f"*{user.id}*", count=1000)]
    finally:
        store.close()
    assert keys, "the user's bucket should be in Redis"
    prefix = f"{os.environ['BATON_REDIS_PREFIX']}:ratelimit:"
    assert all(k.startswith(prefix) for k in keys), keys
    assert any(f"org:{org_users['org'].id}" in k for k in store_keys(org_users["org"].id))


def store_keys(org_id) -> list[str]:
    store = redis.Redis.from_url(os.environ["REDIS_URL"])
    try:
        return [k.decode() for k in store.scan_iter(match=f"*org:{org_id}*", count=1000)]
    finally:
        store.close()


def test_the_storage_answers_headers_from_the_requests_own_increment():
    """api.ratelimits.CountingRedisStorage: an increment also reads the key's TTL; within
    the same request, reading that key's count and expiry costs no round trip; another
    request (or no request) reads Redis."""
    import time
    import uuid

    from flask import Flask

    from api.ratelimits import CountingRedisStorage, storage_uri

    url = os.environ["REDIS_URL"]
    assert storage_uri(url) == f"baton+{url}" and storage_uri("") == "memory://"
    prefix = f"{os.environ['BATON_REDIS_PREFIX']}:ratelimit-test-{uuid.uuid4().hex}"
    storage = CountingRedisStorage(storage_uri(url), key_prefix=prefix)
    client = redis.Redis.from_url(url)
    app = Flask(__name__)
    with app.test_request_context():
        assert storage.incr("k", 60) == 1
        assert storage.incr("k", 60) == 2
        assert 0 < client.ttl(f"{prefix}:k") <= 60  # the window expires as limits' does
        client.incrby(f"{prefix}:k", 5)  # another process's hits, after ours
        calls = []
        original = client.__class__.execute_command
        client.__class__.execute_command = lambda self, *a, **kw: (  # type: ignore[method-assign]
            calls.append(a[0]) or original(self, *a, **kw)
        )
        try:
            assert storage.get("k") == 2  # what this request's increment said
            assert time.time() + 58 < storage.get_expiry("k") <= time.time() + 61
        finally:
            client.__class__.execute_command = original  # type: ignore[method-assign]
        assert calls == []
        assert storage.get("other") == 0  # a key this request did not increment: Redis
    with app.test_request_context():
        assert storage.get("k") == 7  # a new request reads Redis
    assert storage.get("k") == 7 and storage.incr("k", 60) == 8  # outside a request too
    client.delete(f"{prefix}:k")


def test_baton_api_processes_share_the_buckets_and_the_quota(
    scripts, tmp_path, live_client, database_url
):
    """The production command (`baton api`, two gunicorn workers, the real storage): the
    organization's bucket and the monthly quota are one count across processes, and the
    refused requests spend no quota."""
    import httpx

    from orchestration import quotas
    from tests.helpers import live_tenant
    from tests.processes import free_port, wait_http

    tenant = live_tenant(live_client.application, database_url)
    port = free_port()
    script = scripts(
        ["api", "--host", "127.0.0.1", "--port", str(port), "--workers", "2"],
        tmp_path / "api.log",
        {"BATON_ORG_RATE_LIMIT": "5 per minute"},
    )
    url = f"http://127.0.0.1:{port}"
    wait_http(f"{url}/api/v1/health/live", script)
    # A connection each (no keep-alive): both workers answer.
    answers = [
        httpx.get(f"{url}/api/v1/jobs", headers=tenant["headers"], timeout=30) for _ in range(7)
    ]
    assert [a.status_code for a in answers] == [200] * 5 + [429] * 2, answers[-1].text
    # The user's bucket (the first) names the allowed answers; the breached one the 429s.
    remaining = [a.headers["X-RateLimit-Remaining"] for a in answers]
    assert remaining == ["599", "598", "597", "596", "595", "0", "0"]
    assert answers[-1].headers["X-RateLimit-Limit"] == "5"
    assert answers[-1].json()["error"]["details"][0]["scope"] == "organization"
    assert quotas.used(tenant["org_id"]) == 5
