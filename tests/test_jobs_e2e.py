"""End to end through HTTP, real Redis broker, real worker processes, PostgreSQL state."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import Job, JobEvent, JobStep, Template, UsageRecord
from models.db import session_factory, transaction
from tests.helpers import live_tenant, wait_for, wait_terminal

pytestmark = pytest.mark.usefixtures("workers")


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def submit(client, path, body, headers, **kwargs):
    response = client.post(path, json=body, headers=headers, **kwargs)
    assert response.status_code == 202, response.get_json()
    assert response.headers["Location"] == response.get_json()["location"]
    return response.get_json()


def db_rows(database_url, model, **where):
    with transaction(session_factory(database_url)) as s:
        stmt = sa.select(model).filter_by(**where)
        return list(s.scalars(stmt))


def test_task_runs_to_completion_with_usage_and_history(live_client, tenant, database_url):
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/tasks",
        {
            "description": "Summarise the quarterly numbers",
            "agent_id": str(tenant["agent_id"]),
            "priority": "high",
            "parameters": {"task_type": "research"},
        },
        h,
    )
    assert accepted["status"] == "queued" and accepted["task_id"] == accepted["id"]
    assert [p["name"] for p in accepted["phases"]] == ["Execution"]
    body = wait_terminal(live_client, accepted["location"], h)
    assert body["status"] == "completed", body
    assert body["progress"] == 100
    assert body["result"]["provider_used"] == "sim"
    assert body["result"]["model"] == "sim/echo"
    assert "quarterly numbers" in body["result"]["output"]
    phase = body["phases"][0]
    assert phase["token_usage"]["total_tokens"] > 0
    assert phase["execution_time_ms"] is not None
    types = [e["type"] for e in body["history"]]
    assert types[0] == "job.queued" and types[-1] == "job.completed"
    assert {
        "job.running",
        "phase.started",
        "step.started",
        "step.completed",
        "phase.completed",
    } <= set(types)
    assert [e["seq"] for e in body["history"]] == list(range(1, len(types) + 1))

    usage = db_rows(database_url, UsageRecord, job_id=uuid.UUID(body["id"]))
    assert len(usage) == 1
    assert isinstance(usage[0].cost, Decimal) and usage[0].cost > 0
    assert str(usage[0].cost.normalize()) == str(Decimal(body["cost"]).normalize())
    job = db_rows(database_url, Job, id=uuid.UUID(body["id"]))[0]
    assert job.queue.endswith(".high")


def test_build_generate_phase_runs_components_in_parallel(live_client, tenant, database_url):
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/builds",
        {
            "project_name": "shop",
            "goal": "Add JWT auth",
            "parameters": {"components": ["models", "routes", "auth", "tests"]},
            "settings": {"ai_model": "sim/slow"},
        },
        h,
    )
    assert [p["name"] for p in accepted["phases"]] == ["Plan", "Generate", "Test", "Review"]
    body = wait_terminal(live_client, f"/api/v1/builds/{accepted['task_id']}", h, timeout=90)
    assert body["status"] == "completed", body
    assert [c["component"] for c in body["results"]["components"]] == [
        "models",
        "routes",
        "auth",
        "tests",
    ]
    generate = next(p for p in body["phases"] if p["name"] == "Generate")
    assert len(generate["steps"]) == 4
    steps = db_rows(database_url, JobStep, phase_id=uuid.UUID(generate["id"]))
    # Four ~1 s calls on four worker children: every step started before any finished.
    assert max(s.started_at for s in steps) < min(s.completed_at for s in steps)
    wall = (max(s.completed_at for s in steps) - min(s.started_at for s in steps)).total_seconds()
    assert wall < sum(s.execution_time_ms for s in steps) / 1000


def test_analysis_fans_out_and_joins_into_a_score(live_client, tenant):
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/analyses",
        {
            "project_name": "shop",
            "analysis_types": ["quality", "security", "types"],
            "settings": {"ai_model": "sim/slow"},
        },
        h,
    )
    body = wait_terminal(live_client, f"/api/v1/analyses/{accepted['analysis_id']}", h, timeout=60)
    assert body["status"] == "completed", body
    assert set(body["scores"]) == {"quality", "security", "types"}
    assert 0 <= body["quality_score"] <= 10
    analyze = body["phases"][0]
    assert [s["name"] for s in analyze["steps"]] == [
        "analyze:quality",
        "analyze:security",
        "analyze:types",
    ]
    starts = [s["started_at"] for s in analyze["steps"]]
    ends = [s["completed_at"] for s in analyze["steps"]]
    assert max(starts) < min(ends)


def test_orchestration_phases_feed_each_other(live_client, tenant):
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/orchestrate",
        {
            "topic": "A REST API for user management",
            "custom_phases": ["ideation", "design", "implementation"],
            "project_id": str(tenant["project_id"]),
        },
        h,
    )
    assert accepted["run_id"] == accepted["id"]
    assert [p["code"] for p in accepted["phases"]] == ["Phase 0", "Phase 1", "Phase 2"]
    body = wait_terminal(live_client, accepted["location"], h)
    run = body["run"]
    assert (
        run["status"] == "completed"
        and run["completed_phases"] == 3
        and run["success_rate"] == 100.0
    )
    prompts = [p["token_usage"]["prompt_tokens"] for p in body["phases"]]
    # Each phase's prompt carries the previous phases' outputs, so it grows.
    assert prompts[0] < prompts[1] < prompts[2]
    assert all(p["response_text"] and p["status"] == "completed" for p in body["phases"])
    listed = live_client.get(
        f"/api/v1/orchestrations?project_id={tenant['project_id']}", headers=h
    ).get_json()
    assert [item["id"] for item in listed["items"]] == [run["id"]]


def test_orchestration_from_template(live_client, tenant, database_url):
    with transaction(session_factory(database_url)) as s:
        template = Template(
            organization_id=tenant["org_id"],
            name="t",
            template_data={"phases": ["research", "review"]},
        )
        s.add(template)
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/orchestrate",
        {"topic": "Docs site", "template_id": str(template.id)},
        h,
    )
    assert [p["name"] for p in accepted["phases"]] == ["Research", "Review"]
    body = wait_terminal(live_client, accepted["location"], h)
    assert body["run"]["status"] == "completed"
    assert body["run"]["template_id"] == str(template.id)


def test_cancel_stops_a_running_job_before_its_next_step(live_client, tenant, database_url):
    h = tenant["headers"]
    accepted = submit(
        live_client,
        "/api/v1/orchestrate",
        {
            "topic": "slow run",
            "custom_phases": ["one", "two", "three", "four", "five"],
            "settings": {"ai_model": "sim/slow"},
        },
        h,
    )
    run_id = accepted["run_id"]
    wait_for(live_client, accepted["location"], h, lambda b: b["run"]["status"] == "running")
    response = live_client.post(f"/api/v1/orchestrations/{run_id}/cancel", headers=h)
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["status"] == "cancelled"
    time.sleep(2.5)  # longer than one sim/slow step: a step in flight has finished by now
    body = live_client.get(accepted["location"], headers=h).get_json()
    assert body["run"]["status"] == "cancelled"
    statuses = [p["status"] for p in body["phases"]]
    assert statuses[-1] == "cancelled" and "completed" not in statuses[2:], statuses
    started = [e for e in body["history"] if e["type"] == "step.started"]
    assert len(started) <= 2, started
    assert live_client.post(f"/api/v1/orchestrations/{run_id}/cancel", headers=h).status_code == 409


def test_terminal_jobs_answer_409_on_cancel(live_client, tenant):
    h = tenant["headers"]
    task = submit(live_client, "/api/v1/tasks", {"description": "quick"}, h)
    wait_terminal(live_client, task["location"], h)
    response = live_client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=h)
    assert response.status_code == 409 and response.get_json()["error"]["code"] == "CONFLICT"
    build = submit(live_client, "/api/v1/builds", {"project_name": "p", "goal": "g"}, h)
    wait_terminal(live_client, build["location"], h)
    assert live_client.delete(f"/api/v1/builds/{build['id']}", headers=h).status_code == 409
    assert live_client.post(f"/api/v1/jobs/{build['id']}/cancel", headers=h).status_code == 409


def test_a_failing_step_fails_its_job_and_the_worker_keeps_running(
    live_client, tenant, database_url
):
    h = tenant["headers"]
    failing = submit(
        live_client,
        "/api/v1/tasks",
        {"description": "boom", "settings": {"ai_model": "sim/error"}},
        h,
    )
    body = wait_terminal(live_client, failing["location"], h)
    assert body["status"] == "failed"
    assert "server_error" in body["error"]
    assert body["history"][-1]["type"] == "job.failed"
    assert any(e["type"] == "step.failed" for e in body["history"])
    ok = submit(live_client, "/api/v1/tasks", {"description": "after the failure"}, h)
    assert wait_terminal(live_client, ok["location"], h)["status"] == "completed"


def test_a_redelivered_step_does_nothing(live_client, tenant, database_url):
    from baton.celery_app import app as celery_app
    from orchestration.canvas import queue_for
    from orchestration.task_names import TaskName

    h = tenant["headers"]
    task = submit(live_client, "/api/v1/tasks", {"description": "once only"}, h)
    assert wait_terminal(live_client, task["location"], h)["status"] == "completed"
    job_id = uuid.UUID(task["id"])
    step = db_rows(database_url, JobStep, job_id=job_id)[0]
    events_before = len(db_rows(database_url, JobEvent, job_id=job_id))
    # The same message again, as the broker would redeliver it.
    # (Its result asked for: a step's task stores none unless it heads a chord.)
    result = celery_app.send_task(
        str(TaskName.RUN_STEP), args=[str(job_id), str(step.id)], queue=queue_for("medium"),
        ignore_result=False,
    )  # fmt: skip
    assert result.get(timeout=30) == "continue"
    again = db_rows(database_url, JobStep, id=step.id)[0]
    assert again.attempts == step.attempts == 1
    assert len(db_rows(database_url, UsageRecord, job_id=job_id)) == 1
    assert len(db_rows(database_url, JobEvent, job_id=job_id)) == events_before


def test_idempotency_key_returns_the_first_job(live_client, tenant):
    h = {**tenant["headers"], "Idempotency-Key": f"key-{uuid.uuid4()}"}
    first = submit(live_client, "/api/v1/tasks", {"description": "once"}, h)
    second = submit(live_client, "/api/v1/tasks", {"description": "once"}, h)
    assert first["id"] == second["id"]


def test_tenants_cannot_see_each_others_jobs(live_client, tenant, database_url):
    other = live_tenant(live_client.application, database_url)
    task = submit(live_client, "/api/v1/tasks", {"description": "private"}, tenant["headers"])
    for path in (f"/api/v1/jobs/{task['id']}", f"/api/v1/tasks/{task['id']}"):
        assert live_client.get(path, headers=other["headers"]).status_code == 404
    assert (
        live_client.post(f"/api/v1/tasks/{task['id']}/cancel", headers=other["headers"]).status_code
        == 404
    )
    assert live_client.get("/api/v1/jobs", headers=other["headers"]).get_json()["total"] == 0
    mine = live_client.get(
        "/api/v1/jobs?kind=task&sort=-priority,created_at&limit=5", headers=tenant["headers"]
    ).get_json()
    assert mine["total"] >= 1 and mine["limit"] == 5
