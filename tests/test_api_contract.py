"""The API contract (issue 9): the OpenAPI document validates and tells the truth, the docs
page works offline, every bad input is a 4xx in the envelope, headers, and list paging."""

from __future__ import annotations

import io
import re
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from openapi_spec_validator import OpenAPIV30SpecValidator

from api.common.openapi import inline_model_names
from api.compat import registry
from tests import factories

METHODS = ("get", "put", "post", "delete", "patch")


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    db.commit()
    return {"org": org, "user": user, "headers": factories.auth_headers(app, user)}


@pytest.fixture
def document(client) -> dict:
    response = client.get("/api/v1/openapi.json")
    assert response.status_code == 200
    return response.get_json()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                yield method, path, item[method]


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["request_id"] == response.headers["X-Request-ID"]
    if field:
        assert any(d["field"] == field for d in error["details"]), error
    return error


# -- 1. the OpenAPI document -------------------------------------------------------------


def test_document_validates(document, client):
    errors = [str(e)[:200] for e in OpenAPIV30SpecValidator(document).iter_errors()]
    assert errors == []
    assert client.get("/api/v1/openapi.json").get_json() == document  # built alike each time


def test_every_ref_resolves_and_every_operation_id_is_unique(document):
    refs = re.findall(r'"\$ref": "#/([^"]+)"', __import__("json").dumps(document))
    assert refs
    for ref in set(refs):
        node = document
        for part in ref.split("/"):
            assert part in node, f"unresolved $ref #{ref}"
            node = node[part]
    ids = [op["operationId"] for _, _, op in operations(document)]
    assert len(ids) == len(set(ids)) > 70


def test_no_inline_model_is_named_like_a_component(document):
    """openapi-python-client names an inline object parent+property; when that equals a
    component it drops the parent model (it dropped Agent and Job)."""
    schemas = document["components"]["schemas"]
    clashes = set(inline_model_names(schemas)) & set(schemas)
    assert clashes == set()
    assert {"Agent", "Job", "AgentConfig", "JobSettings"} <= set(schemas)


def test_errors_are_documented_as_the_envelope(document, client, tenant):
    envelope = document["components"]["schemas"]["ErrorEnvelope"]
    assert envelope["required"] == ["error"]
    body = document["components"]["schemas"]["ErrorBody"]
    assert set(body["required"]) >= {"code", "message", "details", "request_id"}
    assert "Error" not in document["components"]["schemas"]  # flask-smorest's default
    response = client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=tenant["headers"])
    assert set(response.get_json()) == {"error"}
    assert set(response.get_json()["error"]) >= set(body["required"])


def test_public_operations_have_no_security_and_the_others_answer_401(document):
    public = {
        (m, p) for m, p, op in operations(document) if op["security"] == []
    }  # the document's default is bearer; public ones say so
    assert ("post", "/api/v1/auth/login") in public
    assert ("post", "/api/v1/auth/register") in public
    assert ("post", "/api/v1/auth/refresh") in public
    assert ("get", "/api/v1/health") in public
    assert ("get", "/api/v1/jobs") not in public
    for method, path, op in operations(document):
        if (method, path) not in public:
            assert op["security"] == [{"bearerAuth": []}]
            assert "401" in op["responses"], (method, path)
        if "{" in path:
            assert "404" in op["responses"], (method, path)
        if "requestBody" in op:
            # A dialect answers these in its document's statuses (seed 003: 413/415 are 400s).
            dialect = registry.for_path(path)
            status_map = dialect.status_map if dialect else {}
            expected = {str(status_map.get(s, s)) for s in (400, 413, 415, 422)}
            assert expected <= set(op["responses"]), (method, path)
    # a viewer may read jobs but not cancel them
    assert "403" not in document["paths"]["/api/v1/jobs"]["get"]["responses"]
    assert "403" in document["paths"]["/api/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "409" in document["paths"]["/api/v1/jobs/{job_id}/cancel"]["post"]["responses"]
    assert "401" in document["paths"]["/api/v1/auth/login"]["post"]["responses"]
    assert "429" not in document["paths"]["/api/v1/health"]["get"]["responses"]
    assert "429" in document["paths"]["/api/v1/jobs"]["get"]["responses"]
    unauthorized = document["components"]["responses"]["Unauthorized"]
    assert "WWW-Authenticate" in unauthorized["headers"]
    assert "Retry-After" in document["components"]["responses"]["TooManyRequests"]["headers"]


def test_submissions_take_an_idempotency_key(document):
    for path in ("/api/v1/tasks", "/api/v1/builds", "/api/v1/analyses", "/api/v1/orchestrate"):
        op = document["paths"][path]["post"]
        headers = [p["name"] for p in op.get("parameters", []) if p["in"] == "header"]
        assert headers == ["Idempotency-Key"], path
        assert {"402", "409"} <= set(op["responses"])


def test_money_is_a_decimal_string_and_statuses_are_enums(document):
    schemas = document["components"]["schemas"]
    for name, prop in (("Job", "cost"), ("Step", "cost"), ("AgentStats", "cost_today")):
        assert schemas[name]["properties"][prop]["type"] == "string", name
        assert schemas[name]["properties"][prop]["format"] == "decimal", name
    limit_amount = schemas["LimitCreate"]["properties"]["amount_usd"]
    assert limit_amount["format"] == "decimal"
    assert "maximum" not in limit_amount and "minimum" not in limit_amount
    job = schemas["Job"]["properties"]
    assert set(job["status"]["enum"]) == {
        "pending", "queued", "running", "paused", "completed", "failed", "cancelled"
    }  # fmt: skip
    assert "orchestration" in job["kind"]["enum"]
    assert job["priority"]["enum"] == ["low", "medium", "high", "urgent"]
    assert "skipped" in schemas["Step"]["properties"]["status"]["enum"]


# -- 2. the docs page --------------------------------------------------------------------


def test_docs_page_is_served_with_local_assets(client):
    page = client.get("/api/v1/docs")
    assert page.status_code == 200
    assert page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "/api/v1/openapi.json" in html
    assert not re.search(r"(src|href)=\"https?://", html)  # no CDN
    scripts = re.findall(r'src="([^"]+\.js)"', html)
    assert "/api/v1/docs/assets/swagger-ui-bundle.js" in scripts
    for script in scripts:
        asset = client.get(script)
        assert asset.status_code == 200, script
        assert "javascript" in asset.mimetype
        assert len(asset.data) > 10_000
    css = re.findall(r'href="([^"]+\.css)"', html)
    assert css and client.get(css[0]).status_code == 200


# -- 3. every bad input is a 4xx in the envelope -----------------------------------------


def test_nul_anywhere_is_a_422(client, tenant):
    headers = tenant["headers"]
    login = client.post("/api/v1/auth/login", json={"email": "a\x00@b.co", "password": "x"})
    assert_error(login, 422, "VALIDATION_ERROR", "email")
    body = client.post(
        "/api/v1/projects", json={"name": "p", "description": "a\x00b"}, headers=headers
    )
    assert_error(body, 422, "VALIDATION_ERROR", "description")
    nested = client.post(
        "/api/v1/tasks", json={"description": "x", "settings": {"model\x00": 1}}, headers=headers
    )
    assert_error(nested, 422, "VALIDATION_ERROR")
    query = client.get("/api/v1/projects?search=a%00b", headers=headers)
    assert_error(query, 422, "VALIDATION_ERROR", "search")
    header = client.post(
        "/api/v1/tasks",
        json={"description": "x"},
        headers={**headers, "Idempotency-Key": "k\x00"},
    )
    assert_error(header, 422, "VALIDATION_ERROR", "Idempotency-Key")


@pytest.mark.parametrize(
    "query",
    [
        "offset=18446744073709551616",
        "page=18446744073709551616",
        "offset=-1",
        "limit=101",
        "page=0",
        "created_after=9999-12-31T23:59:59-14:00",
        "created_before=0001-01-01T00:00:00%2B14:00",
        "created_after=10000-01-01T00:00:00Z",
        "created_after=yesterday",
    ],
)
def test_out_of_range_list_arguments_are_a_422(client, tenant, query):
    response = client.get(f"/api/v1/jobs?{query}", headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", query.split("=")[0])


@pytest.mark.parametrize(
    "query",
    [
        "start_date=9999-12-31&end_date=9999-12-31",
        "granularity=month&end_date=9999-12-31",
        "start_date=0001-01-01",
    ],
)
def test_report_dates_past_the_calendar_are_a_422(client, tenant, query):
    response = client.get(f"/api/v1/budget/timeline?{query}", headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR")
    by_project = client.get(f"/api/v1/budget/by-project?{query}", headers=tenant["headers"])
    assert by_project.status_code == 422


def test_a_due_date_past_the_calendar_is_a_422(client, tenant):
    for due in ("9999-12-31T23:59:59-14:00", "0001-01-01T00:00:00+14:00"):
        response = client.post(
            "/api/v1/tasks", json={"description": "x", "due_date": due}, headers=tenant["headers"]
        )
        assert_error(response, 422, "VALIDATION_ERROR", "due_date")


def test_a_body_that_is_not_json_is_a_415(client, tenant):
    response = client.post(
        "/api/v1/projects",
        data='{"name": "p"}',
        content_type="text/plain",
        headers=tenant["headers"],
    )
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE", "Content-Type")
    form = client.post("/api/v1/auth/login", data={"email": "a@b.co", "password": "x"})
    assert_error(form, 415, "UNSUPPORTED_MEDIA_TYPE")


def test_an_oversized_body_is_a_413_chunked_or_not(app, client, tenant):
    limit = app.config["MAX_CONTENT_LENGTH"]
    big = b'{"name": "' + b"x" * (limit + 10) + b'"}'
    sized = client.post(
        "/api/v1/projects", data=big, content_type="application/json", headers=tenant["headers"]
    )
    assert_error(sized, 413, "PAYLOAD_TOO_LARGE")

    # Chunked: no Content-Length, the server has decoded the chunks (as gunicorn does).
    chunked = client.post(
        "/api/v1/projects",
        input_stream=io.BytesIO(big),
        content_type="application/json",
        headers={**tenant["headers"], "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )
    assert_error(chunked, 413, "PAYLOAD_TOO_LARGE")


def test_a_too_long_url_is_a_414_in_the_envelope(client, tenant):
    response = client.get("/api/v1/jobs?sort=" + "x" * 5000, headers=tenant["headers"])
    assert_error(response, 414, "URI_TOO_LONG")


# -- 5. headers --------------------------------------------------------------------------


def test_retry_after_only_on_429(client, tenant):
    ok = client.get("/api/v1/jobs", headers=tenant["headers"])
    assert ok.status_code == 200
    assert "X-RateLimit-Limit" in ok.headers
    assert "Retry-After" not in ok.headers
    missing = client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers=tenant["headers"])
    assert missing.status_code == 404 and "Retry-After" not in missing.headers
    ip = f"10.9.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    answers = [
        client.post(
            "/api/v1/auth/login",
            json={"email": "nobody@example.com", "password": "wrong"},
            environ_base={"REMOTE_ADDR": ip},
        )
        for _ in range(6)
    ]
    assert [a.status_code for a in answers] == [401] * 5 + [429]
    assert all("Retry-After" not in a.headers for a in answers[:5])
    assert int(answers[5].headers["Retry-After"]) > 0


def test_401_says_bearer(client):
    response = client.get("/api/v1/jobs")
    assert_error(response, 401, "AUTHENTICATION_REQUIRED")
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    bad = client.get("/api/v1/jobs", headers={"Authorization": "Bearer not-a-token"})
    assert bad.status_code == 401 and bad.headers["WWW-Authenticate"].startswith("Bearer")


def test_request_id_is_echoed_when_sane_else_generated(client, tenant):
    sent = "req-" + uuid.uuid4().hex
    echoed = client.get("/api/v1/jobs", headers={**tenant["headers"], "X-Request-ID": sent})
    assert echoed.headers["X-Request-ID"] == sent
    for insane in ("a b", "x" * 200, "line\\nbreak", "<script>"):
        answer = client.get(f"/api/v1/jobs/{uuid.uuid4()}", headers={"X-Request-ID": insane})
        generated = answer.headers["X-Request-ID"]
        assert generated != insane and uuid.UUID(generated)
        assert answer.get_json()["error"]["request_id"] == generated
    fresh = client.get("/api/v1/health/live")
    assert uuid.UUID(fresh.headers["X-Request-ID"])


# -- 8. lists ----------------------------------------------------------------------------


def _jobs(db, org, count: int) -> list:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    rows = [
        factories.job(db, org, title=f"job {i}", created_at=start + timedelta(days=i))
        for i in range(count)
    ]
    db.commit()
    return rows


def test_created_after_and_before_are_applied(client, db, tenant):
    _jobs(db, tenant["org"], 5)
    response = client.get(
        "/api/v1/jobs?created_after=2026-01-02&created_before=2026-01-04T00:00:00Z&sort=created_at",
        headers=tenant["headers"],
    )
    assert response.status_code == 200, response.get_json()
    assert [j["title"] for j in response.get_json()["items"]] == ["job 1", "job 2"]
    projects = client.get(
        "/api/v1/projects?created_after=2100-01-01T00:00:00%2B02:00", headers=tenant["headers"]
    )
    assert projects.status_code == 200 and projects.get_json()["total"] == 0


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/jobs",
        "/api/v1/tasks",
        "/api/v1/projects",
        "/api/v1/agents",
        "/api/v1/users",
        "/api/v1/templates",
        "/api/v1/notifications",
        "/api/v1/budget/limits",
        "/api/v1/integrations",
    ],
)
def test_every_list_refuses_unknown_parameters_and_pages_by_cursor(client, tenant, path):
    unknown = client.get(f"{path}?creatd_after=2026-01-01", headers=tenant["headers"])
    assert_error(unknown, 422, "VALIDATION_ERROR", "creatd_after")
    first = client.get(f"{path}?limit=1", headers=tenant["headers"])
    assert first.status_code == 200, first.get_json()
    body = first.get_json()
    assert {"has_next", "has_prev", "next_cursor", "prev_cursor"} <= set(body)
    assert body["has_prev"] is False and body["prev_cursor"] is None
    assert body["has_next"] is (body["total"] > 1)


def test_cursor_walks_forward_and_back(client, db, tenant):
    _jobs(db, tenant["org"], 5)
    headers = tenant["headers"]
    seen, pages, url = [], [], "/api/v1/jobs?limit=2&sort=created_at"
    while True:
        page = client.get(url, headers=headers).get_json()
        pages.append(page)
        seen += [j["title"] for j in page["items"]]
        if not page["has_next"]:
            break
        url = f"/api/v1/jobs?limit=2&sort=created_at&cursor={page['next_cursor']}"
    assert seen == [f"job {i}" for i in range(5)]
    assert [p["offset"] for p in pages] == [0, 2, 4]
    assert pages[-1]["next_cursor"] is None and pages[-1]["has_prev"] is True
    back = client.get(
        f"/api/v1/jobs?limit=2&sort=created_at&cursor={pages[-1]['prev_cursor']}",
        headers=headers,
    ).get_json()
    assert [j["title"] for j in back["items"]] == ["job 2", "job 3"]
    # page and offset still work beside the cursor
    by_page = client.get("/api/v1/jobs?limit=2&page=2&sort=created_at", headers=headers)
    assert [j["title"] for j in by_page.get_json()["items"]] == ["job 2", "job 3"]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ("cursor=not-a-cursor", "cursor"),
        ("cursor=eyJvZmZzZXQiOi0xfQ", "cursor"),  # {"offset":-1}
        ("cursor=eyJvZmZzZXQiOjIsInNvcnQiOm51bGx9&offset=2", "cursor"),
        ("cursor=eyJvZmZzZXQiOjIsInNvcnQiOm51bGx9&sort=-created_at", "cursor"),
    ],
)
def test_bad_cursors_are_a_422(client, tenant, query, field):
    response = client.get(f"/api/v1/jobs?{query}", headers=tenant["headers"])
    assert_error(response, 422, "VALIDATION_ERROR", field)
