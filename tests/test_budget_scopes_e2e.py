"""Budget scopes from a job's real owners, and exact window totals (issue 8), on the
shared real worker processes."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal

import pytest
import sqlalchemy as sa

from models import Agent, Job, JobStep, Organization, UsageRecord
from models.db import session_factory, transaction
from tests.helpers import live_tenant, wait_terminal
from tests.test_budget_e2e import TASK, add_limit, ledger_total, window_of

pytestmark = pytest.mark.usefixtures("workers")

SCOPES = ("project", "agent", "user", "organization")
WAYS = ("agent only", "project only", "both")
FITS, BURST = 2, 6


def _owners(tenant: dict, way: str) -> dict[str, str]:
    owners = {}
    if way != "project only":
        owners["agent_id"] = str(tenant["agent_id"])
    if way != "agent only":
        owners["project_id"] = str(tenant["project_id"])
    return owners


def _applies(scope: str, way: str) -> bool:
    return not (scope == "agent" and way == "project only")  # no agent named, none applies


def test_a_block_limit_of_every_scope_holds_however_the_job_names_its_owners(
    live_client, database_url
):
    cases = []
    for scope in SCOPES:
        for way in WAYS:
            tenant = live_tenant(live_client.application, database_url)
            with transaction(session_factory(database_url)) as s:
                # The agent belongs to the project: a job naming only the agent is the
                # project's too.
                s.get(Agent, tenant["agent_id"]).project_id = tenant["project_id"]
            h = tenant["headers"]
            body = {**TASK, **_owners(tenant, way)}
            first = live_client.post("/api/v1/tasks", json=body, headers=h).get_json()
            per_call = Decimal(wait_terminal(live_client, first["location"], h)["cost"])
            scope_id = {
                "project": tenant["project_id"],
                "agent": tenant["agent_id"],
                "user": tenant["user_id"],
                "organization": None,
            }[scope]
            fields = {"scope_type": scope, "action_on_exceed": "block"}
            if scope_id:
                fields["scope_id"] = scope_id
            # The window starts from what the scope already spent (the first call).
            add_limit(live_client, h, amount_usd=per_call * (FITS + 1), **fields)
            cases.append((scope, way, tenant, body, per_call))

    submitted: dict[int, list[str]] = {}
    for index, (_, _, tenant, body, _) in enumerate(cases):
        submitted[index] = []
        for _ in range(BURST):
            response = live_client.post("/api/v1/tasks", json=body, headers=tenant["headers"])
            assert response.status_code in (202, 402), response.get_json()
            if response.status_code == 202:
                submitted[index].append(response.get_json()["id"])

    all_ids = [i for ids in submitted.values() for i in ids]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        with transaction(session_factory(database_url)) as s:
            open_jobs = s.scalar(
                sa.select(sa.func.count()).where(
                    Job.id.in_(all_ids), Job.status.not_in(["completed", "failed"])
                )
            )
        if not open_jobs:
            break
        time.sleep(0.3)
    assert not open_jobs

    for index, (scope, way, tenant, _, per_call) in enumerate(cases):
        with transaction(session_factory(database_url)) as s:
            jobs = list(s.scalars(sa.select(Job).where(Job.id.in_(submitted[index]))))
        completed = [j for j in jobs if j.status == "completed"]
        spent = ledger_total(database_url, organization_id=tenant["org_id"])
        case = f"{scope} limit, submitted with {way}"
        if _applies(scope, way):
            assert len(completed) == FITS, case
            assert spent == per_call * (FITS + 1), case  # exactly the limit: no overspend
            assert all(
                "BUDGET_EXCEEDED" in (j.error or "") for j in jobs if j.status == "failed"
            ), case
        else:
            assert len(completed) == len(jobs) == BURST, case
        if way == "agent only":  # persisted at submission: reports count it there too
            assert {j.project_id for j in jobs} == {tenant["project_id"]}, case


def test_a_window_created_while_calls_are_in_flight_counts_them(live_client, database_url):
    tenant = live_tenant(live_client.application, database_url)
    h = tenant["headers"]
    body = {"description": "in flight", "settings": {"ai_model": "sim/slow", "max_tokens": 8}}
    ids = []
    for _ in range(4):
        response = live_client.post("/api/v1/tasks", json=body, headers=h)
        assert response.status_code == 202
        ids.append(uuid.UUID(response.get_json()["id"]))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with transaction(session_factory(database_url)) as s:
            running = s.scalar(
                sa.select(sa.func.count()).where(
                    JobStep.job_id.in_(ids), JobStep.status == "running"
                )
            )
            done = s.scalar(
                sa.select(sa.func.count())
                .select_from(UsageRecord)
                .where(UsageRecord.job_id.in_(ids))
            )
        if running >= 2:
            break
        time.sleep(0.02)
    assert running >= 2 and done < 4
    # Created now, the window sums the ledger without the calls in flight; they hold
    # nothing on it, and must still be counted when they settle.
    limit_id = add_limit(live_client, h, amount_usd=Decimal("100"), action_on_exceed="warn")
    for job_id in ids:
        assert wait_terminal(live_client, f"/api/v1/jobs/{job_id}", h)["status"] == "completed"
    window = window_of(database_url, limit_id)
    assert window.reserved == 0
    assert window.spent == ledger_total(database_url, organization_id=tenant["org_id"]) > 0


def test_a_job_cannot_name_another_project_than_its_agents(live_client, database_url):
    from tests import factories

    tenant = live_tenant(live_client.application, database_url)
    with transaction(session_factory(database_url)) as s:
        agent = s.get(Agent, tenant["agent_id"])
        agent.project_id = tenant["project_id"]
        other_id = factories.project(s, s.get(Organization, tenant["org_id"]), name="Other").id
    response = live_client.post(
        "/api/v1/tasks",
        json={**TASK, "agent_id": str(tenant["agent_id"]), "project_id": str(other_id)},
        headers=tenant["headers"],
    )
    assert response.status_code == 422, response.get_json()
    assert response.get_json()["error"]["details"][0]["field"] == "agent_id"
