"""The engine in process (no Celery): the events the claim's and the completion's own
statements write (PostgreSQL), numbered and shaped as append_events wrote them."""

from __future__ import annotations

import sqlalchemy as sa

from models import BudgetWindow, Job, JobEvent, JobKind, JobPhase, UsageRecord
from models.db import session_factory, transaction
from orchestration import budget
from orchestration.jobs import JobSubmission, create_job_rows
from orchestration.principal import Principal
from tests import factories
from workers import engine


def test_a_job_run_step_by_step_writes_its_events_in_order(database_url):
    sessions = session_factory(database_url)
    with transaction(sessions) as s:
        org = factories.organization(s)
        user = factories.user(s, org, role="admin")
        # A limit: the settlement charges its window in the completion's transaction.
        limit = factories.budget_limit(s, org, amount_usd="1000", action_on_exceed="warn")
        job, phases, steps = create_job_rows(
            s,
            principal=Principal(user_id=user.id, organization_id=org.id, role="admin"),
            submission=JobSubmission(
                kind=JobKind.ORCHESTRATION, title="events", input={"topic": "events"},
                settings={"ai_model": "sim/echo"}, custom_phases=["a", "b"],
            ),
        )  # fmt: skip
        order = {p.id: p.position for p in phases}
        step_ids = [st.id for st in sorted(steps, key=lambda st: order[st.phase_id])]
    for step_id in step_ids:
        assert engine.run_step(sessions, job_id=job.id, step_id=step_id) is engine.Outcome.CONTINUE
        # A redelivered message finds its step completed: nothing written twice.
        assert engine.run_step(sessions, job_id=job.id, step_id=step_id) is engine.Outcome.CONTINUE

    with transaction(sessions) as s:
        events = list(s.scalars(sa.select(JobEvent).where(JobEvent.job_id == job.id)
                                .order_by(JobEvent.seq)))  # fmt: skip
        row = s.get(Job, job.id)
        phase_rows = {
            p.name: p for p in s.scalars(sa.select(JobPhase).where(JobPhase.job_id == job.id))
        }
        spent = s.scalar(
            sa.select(sa.func.sum(UsageRecord.cost)).where(UsageRecord.job_id == job.id)
        )
        window = budget.current_window(s, limit)
        s.refresh(window)
        assert isinstance(window, BudgetWindow) and window.spent == spent  # ledger == window
        assert row.status == "completed" and row.progress == 100
        types = [e.type for e in events]
        assert types == [
            "job.queued", "job.running",
            "phase.started", "step.started", "provider.attempt", "step.completed",
            "phase.completed",
            "phase.started", "step.started", "provider.attempt", "step.completed",
            "phase.completed",
            "job.completed",
        ]  # fmt: skip
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        assert row.event_seq == len(events)
        started = [e.data for e in events if e.type == "step.started"]
        assert [(d["phase"], d["attempt"]) for d in started] == [("A", 1), ("B", 1)]
        assert all(d["worker"] for d in started)
        assert [e.data for e in events if e.type == "phase.started"] == [
            {"phase": name, "code": phase_rows[name].code} for name in ("A", "B")
        ]
        completed = [e.data for e in events if e.type == "step.completed"]
        assert [d["progress"] for d in completed] == [50, 100]
        for data in (e.data for e in events if e.type == "phase.completed"):
            phase = phase_rows[data["phase"]]
            assert data["output"] == phase.output
            assert data["token_usage"] == {
                "prompt_tokens": phase.prompt_tokens,
                "completion_tokens": phase.completion_tokens,
                "total_tokens": phase.prompt_tokens + phase.completion_tokens,
            }
        assert row.result["total_phases"] == 2 and row.result["completed_phases"] == 2
