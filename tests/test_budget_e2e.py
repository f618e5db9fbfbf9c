"""Budget accounting under real concurrency: two worker processes, PostgreSQL, Redis."""

from __future__ import annotations

import os
import signal
import time
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import (
    Agent,
    BudgetReservation,
    BudgetWindow,
    Job,
    JobEvent,
    Notification,
    Project,
    UsageRecord,
    utcnow,
)
from models.db import session_factory, transaction
from orchestration import budget, recovery
from tests.helpers import live_tenant, wait_for, wait_terminal

pytestmark = pytest.mark.usefixtures("workers")

# sim answers are truncated to max_tokens, and the reservation counts the prompt exactly as
# the sim server does: each call's worst case equals its actual cost.
TASK = {"description": "Tally the invoices", "settings": {"max_tokens": 8}}


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def add_limit(client, headers, **fields) -> uuid.UUID:
    """Through the API, as a user would; money goes in as a string."""
    body = {"name": "limit", "scope_type": "organization", "period": "daily", **fields}
    for key in ("amount_usd", "alert_threshold", "scope_id"):
        if key in body:
            body[key] = str(body[key])
    response = client.post("/api/v1/budget/limits", json=body, headers=headers)
    assert response.status_code == 201, response.get_json()
    return uuid.UUID(response.get_json()["id"])


def ledger_total(database_url, **where) -> Decimal:
    with transaction(session_factory(database_url)) as s:
        return Decimal(
            s.scalar(
                sa.select(sa.func.coalesce(sa.func.sum(UsageRecord.cost), 0)).filter_by(**where)
            )
        )


def window_of(database_url, limit_id) -> BudgetWindow:
    with transaction(session_factory(database_url)) as s:
        return s.scalar(sa.select(BudgetWindow).where(BudgetWindow.limit_id == limit_id))


def run_task(client, headers, body=TASK) -> dict:
    accepted = client.post("/api/v1/tasks", json=body, headers=headers).get_json()
    return wait_terminal(client, accepted["location"], headers)


def test_block_limit_holds_under_200_concurrent_steps(live_client, tenant, database_url):
    h, org = tenant["headers"], tenant["org_id"]
    first = run_task(live_client, h)
    per_call = Decimal(first["cost"])
    assert per_call > 0
    fits = 37
    # The limit starts from what the organization already spent today (the first call).
    limit_id = add_limit(live_client, h, amount_usd=per_call * (fits + 1), action_on_exceed="block")

    # Hold the organization, queue 200 jobs, then release them all at once.
    assert live_client.post("/api/v1/emergency/pause-all", headers=h).status_code == 200
    ids = []
    for _ in range(200):
        response = live_client.post("/api/v1/tasks", json=TASK, headers=h)
        assert response.status_code == 202, response.get_json()
        ids.append(uuid.UUID(response.get_json()["id"]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with transaction(session_factory(database_url)) as s:
            paused = s.scalar(
                sa.select(sa.func.count()).where(Job.id.in_(ids), Job.status == "paused")
            )
        if paused == len(ids):
            break
        time.sleep(0.2)
    assert paused == len(ids)
    resumed = live_client.post("/api/v1/emergency/resume-all", headers=h).get_json()
    assert resumed["resumed_count"] == len(ids)

    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with transaction(session_factory(database_url)) as s:
            statuses = dict(
                s.execute(
                    sa.select(Job.status, sa.func.count())
                    .where(Job.id.in_(ids))
                    .group_by(Job.status)
                ).all()
            )
        if statuses.get("completed", 0) + statuses.get("failed", 0) == len(ids):
            break
        time.sleep(0.25)
    assert statuses == {"completed": fits, "failed": 200 - fits}, statuses

    with transaction(session_factory(database_url)) as s:
        errors = list(
            s.scalars(sa.select(Job.error).where(Job.id.in_(ids), Job.status == "failed"))
        )
        held = s.scalar(
            sa.select(sa.func.count())
            .select_from(BudgetReservation)
            .where(BudgetReservation.status == "held", BudgetReservation.job_id.in_(ids))
        )
        calls = s.scalar(
            sa.select(sa.func.count()).select_from(UsageRecord).where(UsageRecord.job_id.in_(ids))
        )
    assert all("BUDGET_EXCEEDED" in e for e in errors)
    assert held == 0 and calls == fits
    window = window_of(database_url, limit_id)
    spent = ledger_total(database_url, organization_id=org)
    assert window.spent == spent == per_call * (fits + 1) <= Decimal(window.spent)
    assert window.reserved == 0

    # Once a block limit is spent, a new submission is refused at once with 402.
    response = live_client.post("/api/v1/tasks", json=TASK, headers=h)
    assert response.status_code == 402
    assert response.get_json()["error"]["code"] == "BUDGET_EXCEEDED"


def test_pause_limit_pauses_the_job_and_resume_continues_it(live_client, tenant, database_url):
    h, org = tenant["headers"], tenant["org_id"]
    body = {
        "topic": "pausable",
        "custom_phases": ["one", "two", "three"],
        "agent_id": str(tenant["agent_id"]),
        "settings": {"max_tokens": 8},
    }
    calibration = live_client.post("/api/v1/orchestrate", json=body, headers=h).get_json()
    costs = [
        Decimal(p["cost"]) for p in wait_terminal(live_client, calibration["location"], h)["phases"]
    ]

    with transaction(session_factory(database_url)) as s:
        project = Project(organization_id=org, name="paused project")
        s.add(project)
    limit_id = add_limit(
        live_client, h, scope_type="project", scope_id=project.id,
        amount_usd=costs[0] + costs[1] / 2, action_on_exceed="pause",
    )  # fmt: skip
    accepted = live_client.post(
        "/api/v1/orchestrate", json={**body, "project_id": str(project.id)}, headers=h
    ).get_json()
    paused = wait_for(
        live_client, accepted["location"], h, lambda b: b["run"]["status"] == "paused"
    )
    assert [p["status"] for p in paused["phases"]][0] == "completed"
    assert paused["phases"][2]["status"] == "pending"
    assert any(
        e["type"] == "job.paused" and e["data"].get("reason") == "budget" for e in paused["history"]
    )
    # The people whose job stopped hear about it: the limit is reached for its next call.
    reached = [e["data"] for e in paused["history"] if e["type"] == "budget_alert"]
    assert [(a["level"], a["scope"]["id"]) for a in reached] == [("critical", str(project.id))]
    with transaction(session_factory(database_url)) as s:
        assert s.get(Agent, tenant["agent_id"]).status == "paused"
    raised = live_client.patch(
        f"/api/v1/budget/limits/{limit_id}", json={"amount_usd": str(sum(costs))}, headers=h
    )
    assert raised.status_code == 200, raised.get_json()

    response = live_client.post(f"/api/v1/jobs/{accepted['id']}/resume", headers=h)
    assert response.status_code == 200, response.get_json()
    done = wait_terminal(live_client, accepted["location"], h)
    assert done["run"]["status"] == "completed"
    assert [Decimal(p["cost"]) for p in done["phases"]] == costs
    job_id = uuid.UUID(accepted["id"])
    with transaction(session_factory(database_url)) as s:
        assert (
            s.scalar(
                sa.select(sa.func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.job_id == job_id)
            )
            == 3
        )
        assert s.get(Agent, tenant["agent_id"]).status == "active"
    assert window_of(database_url, limit_id).spent == sum(costs)
    assert live_client.post(f"/api/v1/jobs/{accepted['id']}/resume", headers=h).status_code == 409


def test_threshold_and_limit_alerts_fire_once_per_window(live_client, tenant, database_url):
    h, org = tenant["headers"], tenant["org_id"]
    per_call = Decimal(run_task(live_client, h)["cost"])
    add_limit(
        live_client, h, amount_usd=per_call * 4, alert_threshold=Decimal("0.5"),
        action_on_exceed="warn",
    )  # fmt: skip
    for _ in range(5):
        assert run_task(live_client, h)["status"] == "completed"  # warn never stops a job
    with transaction(session_factory(database_url)) as s:
        notes = list(
            s.scalars(
                sa.select(Notification)
                .where(Notification.organization_id == org)
                .order_by(Notification.created_at)
            )
        )
        events = list(
            s.scalars(
                sa.select(JobEvent.data).join(Job, Job.id == JobEvent.job_id)
                .where(Job.organization_id == org, JobEvent.type == "budget_alert")
                .order_by(JobEvent.created_at)
            )
        )  # fmt: skip
        alert_events = len(events)
    assert [(n.type, n.severity) for n in notes] == [
        ("budget_alert", "warning"),
        ("budget_alert", "critical"),
    ]
    # Seed 001's budget_alert: percentage is a fraction of the limit (0.85 = 85%).
    assert notes[0].data["percentage"] >= 0.5 and notes[1].data["percentage"] >= 1
    assert alert_events == 2
    assert [e["level"] for e in events] == ["warning", "critical"]
    assert events[1]["scope"]["type"] == "organization"
    assert Decimal(events[1]["current"]) >= Decimal(events[1]["limit"]) == per_call * 4
    assert events[1]["message"].endswith("of daily limit 'limit'")
    listed = live_client.get("/api/v1/notifications?severity=critical", headers=h).get_json()
    assert [n["message"] for n in listed["items"]] == [events[1]["message"]]


def test_emergency_pause_all_stops_new_calls_within_one_step(live_client, tenant, database_url):
    h, org = tenant["headers"], tenant["org_id"]
    body = {
        "topic": "long run",
        "custom_phases": ["a", "b", "c", "d", "e", "f"],
        "settings": {"ai_model": "sim/slow"},
    }
    runs = [
        live_client.post("/api/v1/orchestrate", json=body, headers=h).get_json() for _ in range(2)
    ]
    wait_for(live_client, runs[0]["location"], h, lambda b: b["run"]["completed_phases"] >= 1)
    response = live_client.post("/api/v1/emergency/pause-all", headers=h)
    assert response.status_code == 200 and response.get_json()["paused_count"] == 2
    time.sleep(2.5)  # longer than one sim/slow call: anything in flight has settled
    calls_after_pause = ledger_calls = None
    with transaction(session_factory(database_url)) as s:
        ledger_calls = s.scalar(
            sa.select(sa.func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.organization_id == org)
        )
    time.sleep(2.5)
    with transaction(session_factory(database_url)) as s:
        calls_after_pause = s.scalar(
            sa.select(sa.func.count())
            .select_from(UsageRecord)
            .where(UsageRecord.organization_id == org)
        )
        statuses = list(s.scalars(sa.select(Job.status).where(Job.organization_id == org)))
    assert calls_after_pause == ledger_calls
    assert statuses == ["paused", "paused"]

    assert (
        live_client.post("/api/v1/emergency/resume-all", headers=h).get_json()["resumed_count"] == 2
    )
    for run in runs:
        assert (
            wait_terminal(live_client, run["location"], h, timeout=60)["run"]["status"]
            == "completed"
        )
    viewer = live_tenant(live_client.application, database_url, role="manager")
    assert (
        live_client.post("/api/v1/emergency/pause-all", headers=viewer["headers"]).status_code
        == 403
    )


def test_a_killed_worker_leaves_a_hold_the_sweep_releases(live_client, tenant, database_url):
    h, org = tenant["headers"], tenant["org_id"]
    limit_id = add_limit(live_client, h, amount_usd=Decimal("10"), action_on_exceed="block")
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "killed mid-call", "settings": {"ai_model": "sim/slow"}},
        headers=h,
    ).get_json()
    running = wait_for(
        live_client,
        accepted["location"],
        h,
        lambda b: any(e["type"] == "step.started" for e in b["history"]),
    )
    # Mid-call: the step's hold is committed (the claim commits a few ms before it).
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with transaction(session_factory(database_url)) as s:
            if s.scalar(
                sa.select(sa.func.count())
                .select_from(BudgetReservation)
                .where(BudgetReservation.job_id == uuid.UUID(accepted["id"]))
            ):
                break
        time.sleep(0.01)
    worker = next(e for e in running["history"] if e["type"] == "step.started")["data"]["worker"]
    os.kill(int(worker.rsplit(":", 1)[1]), signal.SIGKILL)  # the prefork child making the call

    # Celery re-queues the message; a new child takes the step over and finishes the job.
    done = wait_terminal(live_client, accepted["location"], h, timeout=60)
    assert done["status"] == "completed"
    step = done["phases"][0]["steps"][0]
    assert step["attempts"] == 2
    with transaction(session_factory(database_url)) as s:
        holds = list(
            s.scalars(
                sa.select(BudgetReservation)
                .where(BudgetReservation.job_id == uuid.UUID(accepted["id"]))
                .order_by(BudgetReservation.created_at)
            )
        )
    # Far under the alert level: the settlement is deferred (the window's totals add it).
    assert [r.status for r in holds] == ["held", "deferred"]
    assert window_of(database_url, limit_id).reserved == holds[0].amount

    # The killed call's hold outlives the step's time limit only until the sweep.
    assert (
        recovery.release_expired_reservations(
            session_factory(database_url), now=utcnow() + timedelta(hours=1)
        )
        >= 1
    )
    window = window_of(database_url, limit_id)
    assert window.reserved == 0
    assert window.spent == ledger_total(database_url, organization_id=org)


def test_budget_windows_are_calendar_anchored_in_utc():
    from datetime import UTC, datetime

    now = datetime(2026, 11, 19, 15, 30, tzinfo=UTC)  # a Thursday
    assert budget.window_bounds("daily", now) == (
        datetime(2026, 11, 19, tzinfo=UTC),
        datetime(2026, 11, 20, tzinfo=UTC),
    )
    assert budget.window_bounds("weekly", now) == (
        datetime(2026, 11, 16, tzinfo=UTC),
        datetime(2026, 11, 23, tzinfo=UTC),
    )
    assert budget.window_bounds("monthly", now) == (
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 12, 1, tzinfo=UTC),
    )
    assert budget.window_bounds("monthly", datetime(2026, 12, 31, tzinfo=UTC))[1] == datetime(
        2027, 1, 1, tzinfo=UTC
    )
    assert budget.window_bounds("total", now)[1] is None


def test_deleting_a_limit_mid_call_lets_the_step_settle(live_client, tenant, database_url):
    h = tenant["headers"]
    limit_id = add_limit(live_client, h, amount_usd=Decimal("10"), action_on_exceed="block")
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "slow call", "settings": {"ai_model": "sim/slow"}},
        headers=h,
    ).get_json()
    wait_for(
        live_client,
        accepted["location"],
        h,
        lambda b: any(e["type"] == "step.started" for e in b["history"]),
    )
    with transaction(session_factory(database_url)) as s:
        deadline = time.monotonic() + 10
        while not s.scalar(
            sa.select(sa.func.count())
            .select_from(BudgetReservation)
            .where(BudgetReservation.job_id == uuid.UUID(accepted["id"]))
        ):
            assert time.monotonic() < deadline, "the step never reserved"
            time.sleep(0.05)
    assert live_client.delete(f"/api/v1/budget/limits/{limit_id}", headers=h).status_code == 204

    done = wait_terminal(live_client, accepted["location"], h)
    assert done["status"] == "completed", done.get("error")
    with transaction(session_factory(database_url)) as s:
        holds = list(
            s.scalars(
                sa.select(BudgetReservation.status).where(
                    BudgetReservation.job_id == uuid.UUID(accepted["id"])
                )
            )
        )
    assert holds == ["deferred"]  # a deleted limit alerts no more: deferred
    window = window_of(database_url, limit_id)
    assert window.spent == Decimal(done["cost"]) and window.reserved == 0


def test_a_job_paused_while_its_last_step_finishes_completes_on_resume(
    live_client, tenant, database_url
):
    # The last step's answer lands after the pause: the job keeps it and stays paused;
    # resumed with nothing left to run, the job completes (no step runs again).
    h = tenant["headers"]
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "paused at the end", "settings": {"ai_model": "sim/slow"}},
        headers=h,
    ).get_json()
    wait_for(
        live_client, accepted["location"], h,
        lambda b: any(e["type"] == "step.started" for e in b["history"]),
    )  # fmt: skip
    assert live_client.post("/api/v1/emergency/pause-all", headers=h).status_code == 200
    paused = wait_for(
        live_client, accepted["location"], h,
        lambda b: b["phases"][0]["status"] == "completed",
    )  # fmt: skip
    assert paused["status"] == "paused", paused
    assert live_client.post("/api/v1/emergency/resume-all", headers=h).status_code == 200
    body = wait_terminal(live_client, accepted["location"], h, timeout=60)
    assert body["status"] == "completed", body
    assert "paused at the end" in body["result"]["output"]
    assert [e["type"] for e in body["history"]].count("step.started") == 1
