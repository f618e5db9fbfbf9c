"""Recovery with production processes (issue 8): ``baton api``, two ``baton worker`` and
``baton beat`` on the test's own ``redis-server`` (wiped, stopped) and on PostgreSQL
through a TCP proxy the test cuts. A database of its own, so its reaper (a short stall
setting) never touches other tests' jobs.

Provider calls go to a local OpenAI-compatible server that counts them: every job must
end terminal with exactly one ledger row per call.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url

from models import BudgetReservation, BudgetWindow, Job, JobEvent, Organization, UsageRecord
from models.db import session_factory, transaction
from orchestration import budget
from tests import factories
from tests.conftest import PG_ADMIN_URL, TEST_DB
from tests.fake_openai import FakeOpenAI, completion_body
from tests.faults import RedisServer, Stack, TcpProxy, free_port, wait_until

TERMINAL = {"completed", "failed", "cancelled"}
CALL_SECONDS = 0.8
STALL_SECONDS = 6


class FaultStack:
    def __init__(self, db_url: str, proxy: TcpProxy, redis: RedisServer, stack: Stack) -> None:
        self.db_url, self.proxy, self.redis, self.stack = db_url, proxy, redis, stack
        self.provider: FakeOpenAI | None = None
        self.url = ""
        self.http = httpx.Client(timeout=30)

    def sessions(self):  # noqa: ANN201
        return session_factory(self.db_url)

    def tenant(self, app: Any) -> dict[str, Any]:
        with transaction(self.sessions()) as session:
            org = factories.organization(session)
            user = factories.user(session, org, role="admin")
            ids = {"org_id": org.id, "user_id": user.id}
            headers = factories.auth_headers(app, user)
        return {**ids, "headers": headers}

    def submit(self, path: str, body: dict[str, Any], headers: dict[str, str]) -> str:
        response = self.http.post(f"{self.url}{path}", json=body, headers=headers)
        assert response.status_code == 202, response.text
        return response.json()["id"]

    def jobs(self, ids: list[str]) -> list[Job]:
        with transaction(self.sessions()) as session:
            return list(session.scalars(sa.select(Job).where(Job.id.in_(ids))))

    def wait_terminal(self, ids: list[str], timeout: float) -> list[Job]:
        return wait_until(
            lambda: (jobs := self.jobs(ids)) and all(j.status in TERMINAL for j in jobs) and jobs,
            timeout,
            "every job to end",
            interval=0.3,
        )

    def ledger_rows(self, org_id: uuid.UUID) -> list[UsageRecord]:
        with transaction(self.sessions()) as session:
            return list(
                session.scalars(sa.select(UsageRecord).where(UsageRecord.organization_id == org_id))
            )

    def events(self, ids: list[str], type_: str) -> list[JobEvent]:
        with transaction(self.sessions()) as session:
            return list(
                session.scalars(
                    sa.select(JobEvent).where(JobEvent.job_id.in_(ids), JobEvent.type == type_)
                )
            )


@pytest.fixture(scope="module")
def fault_stack(database_url: str) -> Iterator[FaultStack]:
    from models.db import get_engine
    from models.migrate import upgrade

    db_name = f"{TEST_DB}_faults"
    admin = sa.create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}"'))
        conn.execute(sa.text(f'CREATE DATABASE "{db_name}"'))
    db_url = os.environ["DATABASE_URL"].rsplit("/", 1)[0] + f"/{db_name}"
    upgrade(db_url)
    pg = make_url(db_url)
    proxy = TcpProxy(pg.host or "127.0.0.1", pg.port or 5432)
    proxied_url = pg.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)

    log_dir = Path(os.environ["BATON_HOME"]) / f"faults-{uuid.uuid4().hex[:6]}"
    log_dir.mkdir(parents=True)
    redis = RedisServer(log_dir)
    redis.start()
    provider = FakeOpenAI([(200, {}, completion_body, CALL_SECONDS)])
    env = {
        **os.environ,
        "DATABASE_URL": db_url,
        "CELERY_BROKER_URL": f"{redis.url}/0",
        "CELERY_RESULT_BACKEND": f"{redis.url}/1",
        "BATON_QUEUE_PREFIX": f"{os.environ['BATON_QUEUE_PREFIX']}f",
        "BATON_STEP_TIME_LIMIT": "30",
        "BATON_VISIBILITY_TIMEOUT": "35",
        # Shorter than the step limit here, to keep the test short: safe, as the reaper
        # never re-sends a job with a step whose lease is live.
        "BATON_STALL_SECONDS": str(STALL_SECONDS),
        "BATON_REAPER_INTERVAL_SECONDS": "1",
        "BATON_PROVIDERS": json.dumps(
            {
                "local": {
                    "base_url": provider.base_url,
                    "models": ["slow"],
                    "prices": {"slow": {"input": "1.00", "output": "2.00"}},
                }
            }
        ),
    }
    stack = Stack(env, log_dir)
    faults = FaultStack(db_url, proxy, redis, stack)
    faults.provider = provider
    try:
        faults.url = stack.start_api(free_port())
        for index in range(2):  # workers reach PostgreSQL through the proxy
            stack.start_worker(f"worker-{index}", env={"DATABASE_URL": proxied_url})
        stack.start("beat", "beat")
        yield faults
    finally:
        stack.stop()
        redis.stop()
        proxy.close()
        provider.close()
        faults.http.close()
        get_engine.cache_clear()
        with admin.connect() as conn:
            conn.execute(
                sa.text(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE datname = :db AND pid <> pg_backend_pid()"
                ),
                {"db": db_name},
            )
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{db_name}"'))
        admin.dispose()


def test_beat_runs_the_hold_sweep_on_the_workers(fault_stack, live_client):
    """Beat's schedule reaches the queue every ``baton worker`` consumes: a hold left
    reserved by a call that died is released without anyone asking."""
    tenant = fault_stack.tenant(live_client.application)
    with transaction(fault_stack.sessions()) as session:
        org = session.get(Organization, tenant["org_id"])
        limit = factories.budget_limit(session, org, amount_usd=Decimal("5"), period="daily")
        scope = budget.CallScope(org.id)
        # The call that reserved this died long ago: its hold has expired.
        budget.reserve(
            session, scope=scope, call_key=f"dead:{uuid.uuid4()}", amount=Decimal("1"),
            job_id=None, hold_seconds=-1,
        )  # fmt: skip
        limit_id = limit.id

    def released() -> bool:
        with transaction(fault_stack.sessions()) as session:
            holds = list(
                session.scalars(
                    sa.select(BudgetReservation)
                    .join(BudgetWindow)
                    .where(BudgetWindow.limit_id == limit_id)
                )
            )
            window = session.scalar(
                sa.select(BudgetWindow).where(BudgetWindow.limit_id == limit_id)
            )
            return [h.status for h in holds] == ["released"] and window.reserved == 0

    wait_until(released, 60, "beat's hold sweep to release the dead call's hold")
    assert "baton.budget.sweep_reservations" in fault_stack.stack.log_text("beat")


def test_a_broker_restarted_empty_loses_no_job_and_no_call(fault_stack, live_client):
    """Messages queued, in flight, and being published (a step's next message, a chord's
    join, a job's finish) are lost when the broker stops and comes back empty: the reaper
    re-sends every stalled job from PostgreSQL, and no finished work is failed."""
    tenant = fault_stack.tenant(live_client.application)
    h = tenant["headers"]
    calls_before = len(fault_stack.provider.requests)
    settings = {"ai_model": "local/slow"}
    ids = []
    for index in range(3):
        ids.append(
            fault_stack.submit(
                "/api/v1/orchestrate",
                {"topic": f"wipe {index}", "custom_phases": ["a", "b", "c"], "settings": settings},
                h,
            )
        )
        ids.append(
            fault_stack.submit(
                "/api/v1/builds",
                {
                    "project_name": f"wipe{index}",
                    "goal": "survive",
                    "parameters": {"components": ["x", "y", "z"]},
                    "settings": settings,
                },
                h,
            )
        )
    ids.append(fault_stack.submit("/api/v1/tasks", {"description": "one", "settings": settings}, h))
    # Mid-run: some calls in flight, some jobs' messages still queued.
    wait_until(
        lambda: len(fault_stack.provider.requests) >= calls_before + 4, 60, "calls in flight"
    )
    fault_stack.redis.stop()
    # Calls in flight finish meanwhile; their next messages cannot be published.
    time.sleep(CALL_SECONDS * 2)
    fault_stack.redis.start()

    jobs = fault_stack.wait_terminal(ids, timeout=180)
    assert {j.status for j in jobs} == {"completed"}, [(j.status, j.error) for j in jobs]
    # Re-sent by the reaper (not by luck), within the stated time without progress (the
    # stall plus one reaper period, plus slack for a loaded machine), never failed.
    requeued = fault_stack.events(ids, "job.requeued")
    assert requeued
    for event in requeued:
        with transaction(fault_stack.sessions()) as session:
            before = session.scalar(
                sa.select(sa.func.max(JobEvent.created_at)).where(
                    JobEvent.job_id == event.job_id, JobEvent.seq < event.seq
                )
            )
        assert (event.created_at - before).total_seconds() <= STALL_SECONDS + 1 + 10
    assert not fault_stack.events(ids, "job.failed")
    calls = len(fault_stack.provider.requests) - calls_before
    rows = fault_stack.ledger_rows(tenant["org_id"])
    assert len(rows) == calls
    assert len({r.step_id for r in rows}) == len(rows)  # one paid answer per step


def test_a_database_outage_loses_no_answer_and_pays_no_call_twice(fault_stack, live_client):
    """Workers reach PostgreSQL through a proxy the test cuts while calls are in flight:
    answers received meanwhile are written once it is back; steps that arrive meanwhile
    fail to claim and are retried, not dropped. The API reaches PostgreSQL directly."""
    tenant = fault_stack.tenant(live_client.application)
    h = tenant["headers"]
    calls_before = len(fault_stack.provider.requests)
    settings = {"ai_model": "local/slow"}

    def submit(index: int) -> str:
        return fault_stack.submit(
            "/api/v1/orchestrate",
            {"topic": f"outage {index}", "custom_phases": ["a", "b"], "settings": settings},
            h,
        )

    ids = [submit(0), submit(1)]
    wait_until(
        lambda: len(fault_stack.provider.requests) >= calls_before + 2, 60, "calls in flight"
    )
    fault_stack.proxy.cut()
    ids += [submit(2), submit(3)]  # idle worker children try to claim these meanwhile
    time.sleep(CALL_SECONDS * 4)
    fault_stack.proxy.restore()

    jobs = fault_stack.wait_terminal(ids, timeout=120)
    assert {j.status for j in jobs} == {"completed"}, [(j.status, j.error) for j in jobs]
    calls = len(fault_stack.provider.requests) - calls_before
    rows = fault_stack.ledger_rows(tenant["org_id"])
    assert calls == len(rows) == 8  # 4 jobs x 2 steps: nothing bought twice
    log = fault_stack.stack.log_text("worker")
    assert "database unavailable while writing a step's answer" in log
    assert "database unavailable while claiming a step" in log
