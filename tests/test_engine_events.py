"""The engine in process (no Celery): the events the claim's and the completion's own
statements write (PostgreSQL), numbered and shaped as append_events wrote them."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from typing import NamedTuple

import sqlalchemy as sa

from models import (
    BudgetLimit,
    BudgetWindow,
    Job,
    JobEvent,
    JobKind,
    JobPhase,
    JobStep,
    Organization,
    UsageRecord,
)
from models.db import session_factory, transaction
from orchestration import budget
from orchestration.jobs import JobSubmission, create_job_rows
from orchestration.principal import Principal
from tests import factories
from workers import engine


class QueuedJob(NamedTuple):
    id: uuid.UUID
    step_ids: list[uuid.UUID]  # in order
    organization_id: uuid.UUID
    limits: list[BudgetLimit]


def _queued_job(  # type: ignore[no-untyped-def]
    sessions, phases: list[str], *, title: str = "starts", limits: Sequence[dict] = ()
) -> QueuedJob:
    """A job as the API leaves it (queued) in a new organization, which has a budget
    limit for each of ``limits`` (``factories.budget_limit``'s fields) first."""
    with transaction(sessions) as s:
        org = factories.organization(s)
        user = factories.user(s, org, role="admin")
        made = [factories.budget_limit(s, org, **fields) for fields in limits]
        job, phase_rows, steps = create_job_rows(
            s,
            principal=Principal(user_id=user.id, organization_id=org.id, role="admin"),
            submission=JobSubmission(
                kind=JobKind.ORCHESTRATION, title=title, input={"topic": title},
                settings={"ai_model": "sim/echo"}, custom_phases=phases,
            ),
        )  # fmt: skip
        order = {p.id: p.position for p in phase_rows}
        step_ids = [st.id for st in sorted(steps, key=lambda st: order[st.phase_id])]
        return QueuedJob(job.id, step_ids, org.id, made)


def test_a_job_run_step_by_step_writes_its_events_in_order(database_url):
    sessions = session_factory(database_url)
    # A limit: the settlement charges its window in the completion's transaction.
    job = _queued_job(sessions, ["a", "b"], title="events",
                      limits=[{"amount_usd": "1000", "action_on_exceed": "warn"}])  # fmt: skip
    [limit] = job.limits
    for step_id in job.step_ids:
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


def test_the_first_link_says_it_starts_the_job_and_its_claim_starts_it_first(database_url):
    """``starts_job`` (the chain's first link): queued -> running before the claim, one
    statement fewer than a claim that first finds the job queued; the same events. On a
    job already running (a redelivery), the step is claimed as any other."""
    from orchestration import canvas
    from workers.engine.claim import claim

    sessions = session_factory(database_url)
    statements: list[str] = []

    def counted(conn, cursor, statement, *_):  # type: ignore[no-untyped-def]
        statements.append(statement)

    counts, histories = {}, {}
    for starts_job in (False, True):
        job_id, step_ids, *_ = _queued_job(sessions, ["a", "b"])
        statements.clear()
        sa.event.listen(sessions.kw["bind"], "before_cursor_execute", counted)
        try:
            ctx = claim(sessions, job_id=job_id, step_id=step_ids[0], starts_job=starts_job)
        finally:
            sa.event.remove(sessions.kw["bind"], "before_cursor_execute", counted)
        assert isinstance(ctx, engine.StepContext)
        counts[starts_job] = len(statements)
        with transaction(sessions) as s:
            histories[starts_job] = list(
                s.scalars(sa.select(JobEvent.type).where(JobEvent.job_id == job_id)
                          .order_by(JobEvent.seq))
            )  # fmt: skip
            assert s.get(Job, job_id).status == "running"
    assert counts[True] == counts[False] - 1
    assert (
        histories[True]
        == histories[False]
        == ["job.queued", "job.running", "phase.started", "step.started"]
    )

    # The chain's first link says so, the others do not; a redelivered first link whose
    # step has run is not claimed again.
    job_id, step_ids, *_ = _queued_job(sessions, ["a", "b"])
    with transaction(sessions) as s:
        job = s.get(Job, job_id)
        phases = list(s.scalars(sa.select(JobPhase).where(JobPhase.job_id == job_id)))
        steps = list(s.scalars(sa.select(JobStep).where(JobStep.job_id == job_id)))
        parts = canvas._parts(job, phases, steps)
    assert [part.kwargs for part in parts] == [{"starts_job": True}, {}]
    for step_id in step_ids:
        assert engine.run_step(sessions, job_id=job_id, step_id=step_id, starts_job=True) is (
            engine.Outcome.CONTINUE
        )
    again = claim(sessions, job_id=job_id, step_id=step_ids[0], starts_job=True)
    assert not isinstance(again, engine.StepContext)  # not claimed twice
    with transaction(sessions) as s:
        assert s.get(Job, job_id).status == "completed"


def test_a_step_holds_only_when_its_organization_has_an_active_limit(database_url):
    """The claim reads whether the organization has an active limit: without one (a
    paused or deleted one does not count) the first attempt makes no hold, the statement
    would find nothing to hold on; once one exists, the next step holds and settles on it,
    and its window equals the ledger (the window starts from the ledger's sum)."""
    from datetime import UTC, datetime

    from models import BudgetReservation

    sessions = session_factory(database_url)
    paused = {"name": "paused", "is_active": False}
    deleted = {"name": "deleted", "deleted_at": datetime.now(UTC)}
    job = _queued_job(sessions, ["a", "b"], title="holds", limits=[paused, deleted])
    first, second = job.step_ids

    def holds_of(step_id):  # noqa: ANN001, ANN202
        with transaction(sessions) as s:
            return s.scalars(
                sa.select(BudgetReservation.status).where(
                    BudgetReservation.call_key.startswith(f"{step_id}:")
                )
            ).all()

    from models.prepared import _prepared

    shapes = [(p, a, u) for p in (False, True) for a in (False, True) for u in (False, True)]
    names = {_prepared(budget._reserve_statement(*shape), sessions.kw["bind"].dialect)[0]
             for shape in shapes}  # fmt: skip

    def reservations_tried(step_id):  # noqa: ANN001, ANN202
        """The reservation statements sent while the step runs (PREPARE or EXECUTE)."""
        sent: list[str] = []

        def seen(conn, cursor, statement, *args):  # noqa: ANN001, ANN202
            sent.extend(name for name in names if name in statement)

        bind = sessions.kw["bind"]
        sa.event.listen(bind, "before_cursor_execute", seen)
        try:
            outcome = engine.run_step(sessions, job_id=job.id, step_id=step_id)
        finally:
            sa.event.remove(bind, "before_cursor_execute", seen)
        assert outcome is engine.Outcome.CONTINUE
        return sent

    assert reservations_tried(first) == [] and holds_of(first) == []
    with transaction(sessions) as s:
        org = s.get(Organization, job.organization_id)
        limit = factories.budget_limit(s, org, amount_usd="1000")
    assert len(reservations_tried(second)) in (1, 2)  # EXECUTE, after a PREPARE or not
    assert holds_of(second) in (["settled"], ["deferred"])
    with transaction(sessions) as s:
        window = budget.current_window(s, s.merge(limit))
        spent = s.scalar(
            sa.select(sa.func.sum(UsageRecord.cost)).where(UsageRecord.job_id == job.id)
        )
        assert window.spent == spent > 0 and window.reserved == 0
