"""Job submission input checks: every bad input is a 4xx in the error envelope."""

from __future__ import annotations

import uuid

import pytest

from tests import factories
from tests.conftest import queue_prefix


@pytest.fixture
def tenant(db, app):
    org = factories.organization(db)
    user = factories.user(db, org, role="admin")
    db.commit()
    return {"org": org, "user": user, "headers": factories.auth_headers(app, user)}


def assert_error(response, status: int, code: str, field: str | None = None) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    error = response.get_json()["error"]
    assert error["code"] == code
    assert error["request_id"]
    assert "Traceback" not in response.get_data(as_text=True)
    if field:
        fields = [d["field"] for d in error["details"]]
        assert any(f == field or f.startswith(field + ".") for f in fields), error
    return error


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/api/v1/builds", {"goal": "x"}, "project_name"),
        ("/api/v1/builds", {"project_name": "p"}, "goal"),
        ("/api/v1/builds", {"project_name": "p; rm -rf /", "goal": "x"}, "project_name"),
        ("/api/v1/builds", {"project_name": "p", "goal": "x", "priority": "asap"}, "priority"),
        (
            "/api/v1/builds",
            {"project_name": "p", "goal": "x", "parameters": {"components": []}},
            "parameters",
        ),
        ("/api/v1/analyses", {"project_name": "p", "analysis_types": ["vibes"]}, "analysis_types"),
        ("/api/v1/analyses", {"project_name": "p", "analysis_types": []}, "analysis_types"),
        ("/api/v1/orchestrate", {"custom_phases": ["a"]}, "topic"),
        ("/api/v1/orchestrate", {"topic": "t", "custom_phases": []}, "custom_phases"),
        ("/api/v1/orchestrate", {"topic": "t", "template_id": "not-a-uuid"}, "template_id"),
        (
            "/api/v1/orchestrate",
            {"topic": "t", "settings": {"max_tokens": 0}},
            "settings.max_tokens",
        ),
        (
            "/api/v1/orchestrate",
            {"topic": "t", "settings": {"temperature": 9}},
            "settings.temperature",
        ),
        ("/api/v1/orchestrate", {"topic": "t", "settings": {"ai_model": "gpt-99"}}, "model"),
        ("/api/v1/orchestrate", {"topic": "t", "settings": {"ai_model": "sim/nope"}}, "model"),
        ("/api/v1/tasks", {}, "description"),
        ("/api/v1/tasks", {"description": "d", "agent_id": "123"}, "agent_id"),
        ("/api/v1/tasks", {"description": "d", "due_date": "tomorrow"}, "due_date"),
        ("/api/v1/tasks", {"description": "d", "unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_submission_is_422_with_field_details(client, tenant, path, body, field):
    assert_error(
        client.post(path, json=body, headers=tenant["headers"]), 422, "VALIDATION_ERROR", field
    )


def test_malformed_json_is_400(client, tenant):
    response = client.post(
        "/api/v1/tasks",
        data="{not json",
        headers={**tenant["headers"], "Content-Type": "application/json"},
    )
    assert_error(response, 400, "VALIDATION_ERROR")


def test_body_over_one_mib_is_413(client, tenant):
    response = client.post(
        "/api/v1/tasks", json={"description": "x" * (1024 * 1024 + 10)}, headers=tenant["headers"]
    )
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


def test_unauthenticated_is_401(client):
    assert_error(
        client.post("/api/v1/tasks", json={"description": "d"}), 401, "AUTHENTICATION_REQUIRED"
    )
    assert_error(
        client.get("/api/v1/jobs", headers={"Authorization": "Bearer not.a.token"}),
        401,
        "AUTHENTICATION_REQUIRED",
    )


def test_viewer_cannot_create_jobs(client, db, app, tenant):
    viewer = factories.user(db, tenant["org"], role="viewer")
    headers = factories.auth_headers(app, viewer)
    for path, body in [
        ("/api/v1/tasks", {"description": "d"}),
        ("/api/v1/builds", {"project_name": "p", "goal": "g"}),
        ("/api/v1/analyses", {"project_name": "p"}),
        ("/api/v1/orchestrate", {"topic": "t"}),
    ]:
        assert_error(client.post(path, json=body, headers=headers), 403, "FORBIDDEN")
    assert client.get("/api/v1/jobs", headers=headers).status_code == 200


def test_other_organizations_project_agent_and_template_are_404(client, db, tenant):
    other = factories.organization(db)
    project = factories.project(db, other)
    agent = factories.agent(db, other)
    from models import Template

    template = Template(organization_id=other.id, name="t", template_data={"phases": ["a"]})
    db.add(template)
    db.commit()
    h = tenant["headers"]
    assert_error(
        client.post(
            "/api/v1/tasks", json={"description": "d", "project_id": str(project.id)}, headers=h
        ),
        404,
        "RESOURCE_NOT_FOUND",
        "project_id",
    )
    assert_error(
        client.post(
            "/api/v1/tasks", json={"description": "d", "agent_id": str(agent.id)}, headers=h
        ),
        404,
        "RESOURCE_NOT_FOUND",
        "agent_id",
    )
    assert_error(
        client.post(
            "/api/v1/orchestrate", json={"topic": "t", "template_id": str(template.id)}, headers=h
        ),
        404,
        "RESOURCE_NOT_FOUND",
        "template_id",
    )


def test_unknown_and_malformed_job_ids(client, tenant):
    h = tenant["headers"]
    for path in (
        "/api/v1/jobs/",
        "/api/v1/tasks/",
        "/api/v1/builds/",
        "/api/v1/analyses/",
        "/api/v1/orchestrations/",
    ):
        assert_error(client.get(path + str(uuid.uuid4()), headers=h), 404, "RESOURCE_NOT_FOUND")
        assert_error(client.get(path + "not-a-uuid", headers=h), 404, "RESOURCE_NOT_FOUND")
    assert_error(
        client.post(f"/api/v1/tasks/{uuid.uuid4()}/cancel", headers=h), 404, "RESOURCE_NOT_FOUND"
    )


@pytest.mark.parametrize(
    "query",
    [
        "limit=0",
        "limit=101",
        "offset=-1",
        "status=bogus",
        "kind=bogus",
        "sort=password",
        "page=0",
        "project_id=x",
    ],
)
def test_bad_list_arguments_are_422(client, tenant, query):
    assert_error(
        client.get(f"/api/v1/jobs?{query}", headers=tenant["headers"]), 422, "VALIDATION_ERROR"
    )


def test_openapi_document_lists_the_job_routes(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    for path in (
        "/api/v1/tasks",
        "/api/v1/builds",
        "/api/v1/analyses",
        "/api/v1/orchestrate",
        "/api/v1/jobs/{job_id}",
    ):
        assert path in spec["paths"]


def test_job_history_comes_a_page_at_a_time(client, db, tenant):
    from models import JobEvent

    row = factories.job(db, tenant["org"], created_by_id=tenant["user"].id, event_seq=250)
    db.add_all(
        JobEvent(job_id=row.id, seq=seq, type="step.progress", data={"n": seq})
        for seq in range(1, 251)
    )
    db.commit()
    h, url = tenant["headers"], f"/api/v1/jobs/{row.id}"

    first = client.get(url, headers=h).get_json()  # 100 by default
    assert [e["seq"] for e in first["history"]] == list(range(1, 101))
    assert first["history_next"] == 100
    seen, after = [], 0
    while after is not None:
        page = client.get(f"{url}?history_limit=70&history_after={after}", headers=h).get_json()
        seen += [e["seq"] for e in page["history"]]
        after = page["history_next"]
    assert seen == list(range(1, 251))  # every event once, in order
    last = client.get(f"{url}?history_after=250", headers=h).get_json()
    assert last["history"] == [] and last["history_next"] is None
    # The seed kind's own endpoint keeps the whole history.
    task = client.get(f"/api/v1/tasks/{row.id}", headers=h).get_json()
    assert len(task["history"]) == 250


@pytest.mark.parametrize(
    "query", ["history_limit=0", "history_limit=1001", "history_after=-1", "history_after=x"]
)
def test_bad_history_page_arguments_are_422(client, db, tenant, query):
    row = factories.job(db, tenant["org"])
    db.commit()
    assert_error(
        client.get(f"/api/v1/jobs/{row.id}?{query}", headers=tenant["headers"]),
        422,
        "VALIDATION_ERROR",
    )


def test_openapi_documents_the_history_page(client):
    spec = client.get("/api/v1/openapi.json").get_json()
    params = {p["name"] for p in spec["paths"]["/api/v1/jobs/{job_id}"]["get"]["parameters"]}
    assert {"history_limit", "history_after"} <= params
    schemas = spec["components"]["schemas"]
    assert "history_next" in schemas["Job"]["properties"]


def test_the_apis_redis_channel_sends_through_one_client(app):
    """orchestration.redis_transport: the API's broker channels reuse one Redis client
    (kombu's builds one per publish); messages still arrive, on the right queue."""
    from kombu import Connection, Queue

    from baton.celery_app import app as celery_app
    from orchestration.redis_transport import TRANSPORT, Transport

    url = celery_app.conf.broker_url
    if not url.startswith("redis"):
        pytest.skip("the broker is not Redis")
    assert celery_app.conf.broker_transport == TRANSPORT  # create_app set it
    queue = Queue(f"test-shared-client-{uuid.uuid4().hex}")
    with Connection(url, transport=Transport) as conn:
        channel = conn.default_channel
        with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
            assert first is second
        producer = conn.Producer(channel)
        for n in range(3):
            producer.publish({"n": n}, routing_key=queue.name, declare=[queue], serializer="json")
        with channel.conn_or_acquire() as third:
            assert third is first
        got = [queue(channel).get(no_ack=True).payload["n"] for _ in range(3)]
        assert got == [0, 1, 2]
        queue(channel).delete()


def _transient_job(step_counts: list[int]):  # type: ignore[no-untyped-def]
    """A job, its phases and steps as objects (never written): what canvas.enqueue reads."""
    from models import Job, JobPhase, JobStep

    job = Job(
        id=uuid.uuid4(),
        organization_id=uuid.uuid4(),
        kind="orchestration",
        priority="medium",
        queue=f"test-canvas-{uuid.uuid4().hex}",
    )
    phases, steps = [], []
    for position, count in enumerate(step_counts):
        phase = JobPhase(id=uuid.uuid4(), job_id=job.id, position=position, name=f"p{position}")
        phases.append(phase)
        steps += [
            JobStep(
                id=uuid.uuid4(),
                job_id=job.id,
                phase_id=phase.id,
                position=n,
                name=f"s{n}",
                celery_task_id=str(uuid.uuid4()),
            )
            for n in range(count)
        ]
    return job, phases, steps


@pytest.mark.parametrize("tasks_registered", [False, True])
@pytest.mark.parametrize("step_counts", [[1], [1, 1, 1, 1, 1], []])
def test_a_chain_is_sent_as_celerys_own_chain_would_be(app, step_counts, tasks_registered):
    """canvas.send_chain (no clone, no freeze of every link) publishes the message that
    ``chain(...).apply_async()`` publishes for the same job: headers, body (its ``chain``
    field included), routing, as serialized. As the API sends (no task registered) and as
    a worker does (recovery's re-sends: the tasks registered). Pins the shortcut to the
    Celery installed."""
    import json

    from celery import chain
    from celery.signals import before_task_publish

    from baton.celery_app import app as celery_app
    from orchestration import canvas

    if tasks_registered:  # as in a worker
        import workers.tasks  # noqa: F401
    # A worker's app is finalized before it sends. Before that, a task registered but
    # still pending is not in the registry send_task reads, and its message would lack
    # the task's time limits (the worker applies the same ones itself).
    celery_app.finalize(auto=True)
    job, phases, steps = _transient_job(step_counts)
    sent: list[dict] = []

    def capture(sender=None, body=None, headers=None, routing_key=None, **kw):  # type: ignore[no-untyped-def]
        # As it goes on the wire: JSON (a task name given as a str enum is its value).
        message = {"task": sender, "body": body, "headers": dict(headers), "key": routing_key}
        sent.append(json.loads(json.dumps(message)))

    before_task_publish.connect(capture)
    try:
        canvas.enqueue(job, phases, steps)
        chain(*canvas._parts(job, phases, steps)).apply_async(**canvas._SEND_RETRY)
    finally:
        before_task_publish.disconnect(capture)
        with celery_app.connection_for_write() as conn:
            conn.default_channel.queue_delete(job.queue)
    assert len(sent) == 2
    ours, celerys = sent
    if not step_counts:  # finish alone: its task id is generated by each send
        for message in sent:
            message["headers"].pop("id")
            message["headers"].pop("root_id")
    assert ours == celerys
    if len(step_counts) > 1:
        assert [link["options"]["task_id"] for link in ours["body"][2]["chain"]] == [
            s.celery_task_id for s in reversed(steps[1:])
        ]


def test_a_submission_alone_is_one_statement_in_autocommit(database_url, monkeypatch, request):
    """submit_job on an engine-bound factory (every API process): a job whose INSERT is the
    transaction's only write is one statement in autocommit (no SQLAlchemy statement, no
    BEGIN/COMMIT) and writes the same rows as the session path; a job that counts a
    template use commits both through the session; a failed autocommit INSERT raises
    SQLAlchemy's IntegrityError (the idempotency race's path) and pools no autocommit
    connection."""
    import sqlalchemy as sa

    from models import Job, JobEvent, JobKind, JobPhase, JobStep, Template
    from models.db import get_engine, session_factory, transaction
    from orchestration import jobs
    from orchestration.principal import Principal

    sessions = session_factory(database_url)
    engine = get_engine(database_url)
    with transaction(sessions) as s:
        org = factories.organization(s)
        user = factories.user(s, org, role="admin")
        template = Template(organization_id=org.id, name="t", template_data={"phases": ["x"]})
        s.add(template)
    principal = Principal(user_id=user.id, organization_id=org.id, role="admin", block_limits=False)

    def submission(**kw):  # type: ignore[no-untyped-def]
        return jobs.JobSubmission(
            kind=JobKind.ORCHESTRATION,
            title="t",
            input={"topic": "t", "integration_enabled": False},
            settings={"ai_model": "sim/echo"},
            **kw,
        )

    statements: list[str] = []

    def count(_conn, _cursor, statement, *_args):  # type: ignore[no-untyped-def]
        statements.append(statement)

    # The jobs go to queues no worker reads: the rows compared below stay as submitted
    # (the suite's workers would run them).
    from baton.settings import get_settings

    monkeypatch.setenv("BATON_QUEUE_PREFIX", queue_prefix("alone"))
    get_settings.cache_clear()
    request.addfinalizer(get_settings.cache_clear)  # before the environment is restored
    sa.event.listen(engine, "before_cursor_execute", count)
    try:
        alone = jobs.submit_job(  # as the submission routes call it (no creator's row)
            sessions,
            principal=principal,
            submission=submission(custom_phases=["a", "b"]),
            with_creator=False,
        )
        assert statements == []
        templated = jobs.submit_job(
            sessions, principal=principal, submission=submission(template_id=template.id)
        )
        assert any(s.startswith("WITH new_rows_0") for s in statements)
    finally:
        sa.event.remove(engine, "before_cursor_execute", count)
    with transaction(sessions) as s:  # the session path, for comparison
        via_session, _, _ = jobs.create_job_rows(
            s, principal=principal, submission=submission(custom_phases=["a", "b"])
        )

    def rows(job_id):  # type: ignore[no-untyped-def]
        """The job's rows, without what differs between two submissions."""
        volatile = {"id", "job_id", "phase_id", "celery_task_id", "created_at", "updated_at"}

        def plain(row):  # type: ignore[no-untyped-def]
            return {k: v for k, v in row._mapping.items() if k not in volatile}

        # In a stable order of their own: a select without ORDER BY may return a phase's
        # steps either way round (the rows' order on disk is not theirs).
        with sessions() as s:
            return [
                sorted(
                    (
                        plain(r)
                        for r in s.execute(sa.select(table.__table__).where(where == job_id))
                    ),
                    key=repr,
                )
                for table, where in (
                    (Job, Job.id),
                    (JobPhase, JobPhase.job_id),
                    (JobStep, JobStep.job_id),
                    (JobEvent, JobEvent.job_id),
                )
            ]

    written = rows(alone.job.id)
    assert written == rows(via_session.id)
    assert [len(table) for table in written] == [1, 2, 2, 1]
    assert written[0][0]["event_seq"] == 1 and written[0][0]["total_steps"] == 2
    assert written[3][0]["type"] == "job.queued"
    assert [len(table) for table in rows(templated.job.id)] == [1, 1, 1, 1]
    with sessions() as s:
        assert s.get(Template, template.id).usage_count == 1

    with sessions() as s:
        new = jobs._new_job(s, principal=principal, submission=submission())
    new.job.id = alone.job.id  # a job row that exists
    with pytest.raises(sa.exc.IntegrityError):
        jobs._insert_autocommit(engine, new.tables)
    with engine.connect() as conn:  # the pool's connection, as handed out
        assert conn.connection.driver_connection.autocommit is False
        assert conn.execute(sa.text("SELECT 1")).scalar() == 1
