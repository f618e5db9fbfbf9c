"""Claiming a step: a compare-and-set on its row, then everything the call needs
(job, phase, earlier phases' outputs, agent, organization, provider keys)."""

from __future__ import annotations

import functools
import logging
import os
import uuid
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import aggregate_order_by
from sqlalchemy.orm import Session, aliased, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from baton.settings import get_settings
from models import (
    Agent,
    Job,
    JobPhase,
    JobStatus,
    JobStep,
    Organization,
    StepStatus,
    User,
    utcnow,
)
from models.db import transaction
from models.prepared import prepared_orm
from orchestration import budget, integrations, live
from orchestration.state import (
    append_events,
    given_event_params,
    given_event_row,
    numbered_events,
    queue_live_events,
    set_phase_status,
    start_queued_job,
    transition_job,
)
from workers.engine.completion import fail_in
from workers.engine.core import WORKER_ID_HOST, FirstHold, Outcome, StepContext, worker_id

log = logging.getLogger(__name__)


def _claimer_is_dead(claimed_by: str | None) -> bool:
    """True when the claiming process ran on this host and no longer exists (a killed
    prefork child whose message Celery re-queued)."""
    if not claimed_by or ":" not in claimed_by:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != WORKER_ID_HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None = None,
    hold: Callable[[Session, StepContext], FirstHold | None] | None = None,
    starts_job: bool = False,
) -> StepContext | Outcome:
    """``hold``: called last in the claim's transaction, it may make the first attempt's
    budget hold there (workers/engine/run.py), and may raise the budget's refusal, which
    rolls the claim back with it. ``starts_job``: the job may still be queued (the
    chain's first link): ``queued -> running`` is tried before the claim, not after one
    that finds the job queued (a statement fewer for a job's first step)."""
    with transaction(sessions) as session:
        # step.started (and the rest) published from the sender thread while the step
        # goes on to its call; the completion's messages wait for them (in order).
        live.send_in_background(session)
        now = utcnow()
        # PostgreSQL: the claim and its context in one statement (the claim a CTE).
        claim_once = (
            _claim_with_context
            if session.bind.dialect.name == "postgresql"
            else _claim_pending_alone
        )
        # The first step of a queued job (pending): the job starts, and the step is
        # claimed as in the common case; its job.running is the first of the claim's events.
        job_started = (
            start_queued_job(session, job_id=job_id, step_id=step_id, now=now)
            if starts_job
            else None
        )
        step, loaded = claim_once(
            session, job_id=job_id, step_id=step_id, now=now,
            leading=[job_started] if job_started else [],
        )  # fmt: skip
        if step is None and not starts_job:  # a message that did not say (an older one)
            job_started = start_queued_job(session, job_id=job_id, step_id=step_id, now=now)
            if job_started is not None:
                step, loaded = claim_once(
                    session, job_id=job_id, step_id=step_id, now=now, leading=[job_started]
                )
        if step is None:  # not a pending step of a running job: look closer
            step = _claim_other(
                session, job_id=job_id, step_id=step_id, take_over_from=take_over_from, now=now
            )
            if isinstance(step, Outcome):
                return step
            loaded = None
        ctx = _context(session, step, now, [job_started] if job_started else [], loaded=loaded)
        if hold is not None:
            ctx.first_hold = hold(session, ctx)
        return ctx


def _claim_values(now: datetime) -> dict[str, Any]:
    return {
        "status": StepStatus.RUNNING.value,
        "attempts": JobStep.attempts + 1,
        "started_at": now,
        "lease_expires_at": now + timedelta(seconds=get_settings().step_time_limit),
        "claimed_by": worker_id(),
    }


def _claim_params(job_id: uuid.UUID, step_id: uuid.UUID, now: datetime) -> dict[str, Any]:
    return {
        "k_step_id": step_id,
        "k_job_id": job_id,
        "k_now": now,
        "k_lease": now + timedelta(seconds=get_settings().step_time_limit),
        "k_worker": worker_id(),
    }


def _claim_pending_alone(
    session: Session,
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    now: datetime,
    leading: list[tuple[str, dict[str, Any]]],
) -> tuple[JobStep | None, None]:
    """The common case in one statement: a pending step of a running job becomes this
    delivery's, and the row comes back with it (RETURNING: nothing is read twice)."""
    step = session.scalars(
        _claim_pending_statement(), _claim_params(job_id, step_id, now)
    ).one_or_none()
    return step, None


class _Loaded(NamedTuple):
    """What the claim's context query read (``_context``)."""

    job: Job
    organization: Organization
    agent: Agent | None
    version: str  # of the organization's integrations (integrations.version_of)
    creator_active: bool | None
    budget_limited: bool  # budget.any_active_limit of the job's organization
    phase: JobPhase  # as it was before the query started it
    started: bool | None  # the query started the phase (None: it did not try, SQLite)
    previous: list[tuple[str, str]]  # (name, output) of the earlier phases, in order
    # Written by the claim's statement (``_claim_context_statement``): the job's
    # ``event_seq`` after the claim's events and its live columns; None if not written.
    numbered: tuple[Any, ...] | None = None


def _claim_with_context(
    session: Session,
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    now: datetime,
    leading: list[tuple[str, dict[str, Any]]],
) -> tuple[JobStep | None, _Loaded | None]:
    """PostgreSQL: ``_claim_pending_statement`` and the context it needs in one statement
    (``_claim_context_statement``), which starts the claimed step's phase and writes the
    claim's events after ``leading`` (the first step's job.running): one round trip for
    all. Nothing (None, None) if the claim did not take (nor was anything written)."""
    params = {**_claim_params(job_id, step_id, now), "x_now": now}
    params |= given_event_params(leading)
    row = session.execute(_claim_context_statement(len(leading)), params).one_or_none()
    if row is None:
        return None, None
    job, organization, agent, version, creator_active, limited, phase, started, step, previous = (
        row[:10]
    )
    loaded = _Loaded(
        job, organization, agent, version, creator_active, bool(limited), phase, bool(started),
        [(name, output) for name, output in previous or ()], tuple(row[10:]),
    )  # fmt: skip
    return step, loaded


@functools.cache
def _claim_pending_statement() -> sa.Update:
    """The common case's compare-and-set, built once (building it was a good part of
    the claim's Python)."""
    return (
        _claim_update()
        .returning(JobStep)
        .execution_options(synchronize_session=False, populate_existing=True)
    )


def _claim_update() -> sa.Update:
    job_running = (
        sa.select(Job.id)
        .where(Job.id == sa.bindparam("k_job_id"), Job.status == JobStatus.RUNNING.value)
        .exists()
    )
    return (
        sa.update(JobStep)
        .where(
            JobStep.id == sa.bindparam("k_step_id"),
            JobStep.job_id == sa.bindparam("k_job_id"),
            JobStep.status == StepStatus.PENDING.value,
            job_running,
        )
        .values(
            status=StepStatus.RUNNING.value,
            attempts=JobStep.attempts + 1,
            started_at=sa.bindparam("k_now", type_=JobStep.__table__.c.started_at.type),
            lease_expires_at=sa.bindparam(
                "k_lease", type_=JobStep.__table__.c.lease_expires_at.type
            ),
            claimed_by=sa.bindparam("k_worker", type_=sa.String),
        )
    )


def _claim_other(
    session: Session,
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None,
    now: datetime,
) -> JobStep | Outcome:
    """The first step of a queued job, a redelivery, a take-over, or nothing to do."""
    step = session.get(JobStep, step_id)
    job = session.get(Job, job_id)
    if step is None or job is None or step.job_id != job.id:
        log.warning("step %s of job %s not found; dropping the message", step_id, job_id)
        return Outcome.STOP
    if step.status == StepStatus.COMPLETED.value:
        return Outcome.CONTINUE  # a redelivered message: no second call, no second charge
    if step.status != StepStatus.PENDING.value and step.status != StepStatus.RUNNING.value:
        return Outcome.STOP
    if job.status == JobStatus.QUEUED.value:
        if transition_job(session, job_id=job.id, to=JobStatus.RUNNING):
            # What the UPDATE wrote; _context's query loads the row again anyway.
            set_committed_value(job, "status", JobStatus.RUNNING.value)
        else:
            session.refresh(job)
    if job.status != JobStatus.RUNNING.value:
        return Outcome.STOP
    settings = get_settings()
    # A redelivery alone does not take a running step over: the first delivery may be
    # alive (a reaper re-send, a broker restore). Its claimer must be gone, its lease
    # over, or it is this very delivery, retried after a database outage.
    own_retry = take_over_from is not None and step.claimed_by == take_over_from
    take_over = own_retry or _claimer_is_dead(step.claimed_by)
    if (
        step.status == StepStatus.RUNNING.value
        and step.attempts >= settings.step_max_deliveries
        and not own_retry  # an outage retried it: its worker did not die
        and (take_over or (step.lease_expires_at is not None and step.lease_expires_at < now))
    ):
        fail_in(
            session,
            StepContext(job=job, step=step, phase=session.get(JobPhase, step.phase_id),
                        attempt=step.attempts, agent=None, organization=None, previous=[],
                        siblings=[]),
            f"STEP_ABANDONED: started {step.attempts} times without finishing "
            "(its worker died or hit the step's hard time limit each time)",
        )  # fmt: skip
        return Outcome.FAILED
    may_take_over = sa.or_(
        JobStep.status == StepStatus.PENDING.value,
        sa.and_(
            JobStep.status == StepStatus.RUNNING.value,
            sa.or_(sa.true() if take_over else sa.false(), JobStep.lease_expires_at < now),
        ),
    )
    claimed = session.scalars(
        sa.update(JobStep)
        .where(JobStep.id == step.id, may_take_over)
        .values(**_claim_values(now))
        .returning(JobStep)
        .execution_options(synchronize_session=False, populate_existing=True)
    ).one_or_none()
    if claimed is None:
        return Outcome.STOP  # another delivery of this message is running it right now
    return claimed


def _context(
    session: Session,
    step: JobStep,
    now: datetime,
    events: list[tuple[str, dict[str, Any]]],
    *,
    loaded: _Loaded | None = None,
) -> StepContext:
    """Everything the call needs, in one query (the job's phases, each row with the job,
    organization, agent and the integrations' version) that on PostgreSQL also starts the
    step's phase (a data-modifying CTE), and the claim's events in one. ``loaded``: what
    that query reads, already read with the claim (``_claim_with_context``)."""
    if loaded is None:
        loaded = _load_context(session, step, now)
    (job, organization, agent, version, creator_active, limited, phase, started, previous,
     numbered) = loaded  # fmt: skip
    if started is None:  # SQLite: no UPDATE inside a WITH
        started = set_phase_status(
            session, phase_id=phase.id, to=StepStatus.RUNNING, from_=[StepStatus.PENDING],
            started_at=now,
        )  # fmt: skip
    if started:
        # What the UPDATE wrote (the query's rows show the phase as it was before it):
        # the completion times the phase from it.
        set_committed_value(phase, "status", StepStatus.RUNNING.value)
        set_committed_value(phase, "started_at", now)
        events.append(("phase.started", {"phase": phase.name, "code": phase.code}))
    events.append(
        (
            "step.started",
            {"phase": phase.name, "step": step.name, "attempt": step.attempts,
             "worker": step.claimed_by},
        )
    )  # fmt: skip
    # The job's status as of the row lock the numbering takes (held until commit: a
    # cancel landing now waits for this claim), for the first hold (run.py).
    if numbered is None:
        appended = append_events(session, job_id=job.id, events=events)
    else:  # written by the claim's statement from the same values: announced after commit
        appended = queue_live_events(
            session, job_id=job.id, events=events, first=numbered[0] - len(events) + 1,
            now=now, live_values=numbered[1:],
        )  # fmt: skip
    set_committed_value(job, "status", appended.status)
    siblings = []
    providers = None
    if step.spec.get("kind") == "score":
        siblings = list(session.scalars(sa.select(JobStep).where(JobStep.job_id == job.id)))
    else:
        providers = integrations.cached_provider_context(
            session, organization_id=job.organization_id, version=version
        )
    return StepContext(
        job=job,
        step=step,
        phase=phase,
        attempt=step.attempts,
        agent=agent,
        organization=organization,
        previous=previous,
        siblings=siblings,
        providers=providers,
        creator_active=creator_active is not False,
        budget_limited=limited,
    )


def _load_context(session: Session, step: JobStep, now: datetime) -> _Loaded:
    """``_context_statement``'s rows (one a phase of the job) as ``_Loaded``."""
    dialect = session.bind.dialect.name
    rows = session.execute(
        _context_statement(dialect),
        {"x_job_id": step.job_id, "x_phase_id": step.phase_id, "x_now": now},
    ).all()
    job, organization, agent, version, creator_active, limited = rows[0][:6]
    phases = [row[6] for row in rows]
    phase = next(p for p in phases if p.id == step.phase_id)
    return _Loaded(
        job, organization, agent, version, creator_active, bool(limited), phase,
        bool(rows[0][7]) if dialect == "postgresql" else None,
        [(p.name, p.output or "") for p in phases if p.position < phase.position],
    )  # fmt: skip


def _context_select() -> sa.Select:
    return (
        sa.select(
            Job,
            Organization,
            Agent,
            integrations.version_of(Job.organization_id),
            User.is_active,
            budget.any_active_limit(Job.organization_id),
            JobPhase,
        )
        .join(Organization, Organization.id == Job.organization_id)
        .join(JobPhase, JobPhase.job_id == Job.id)
        .outerjoin(Agent, Agent.id == Job.agent_id)
        .outerjoin(User, User.id == Job.created_by_id)
        .where(Job.id == sa.bindparam("x_job_id"))
        .order_by(JobPhase.position)
        .execution_options(populate_existing=True)
    )


@functools.lru_cache(maxsize=4)
def _context_statement(dialect: str) -> sa.Select:
    """``_context``'s query, built once: one row per phase of the job (in order), each
    with the job, its organization, agent, creator's activity, integrations' version and
    whether the organization has an active budget limit (the ORM returns one object for
    the repeated job, organization and agent). On PostgreSQL it also moves the step's
    phase from pending to running (``:x_phase_id``, ``:x_now``) and returns whether it
    did: one round trip less for every step."""
    statement = _context_select()
    if dialect != "postgresql":
        return statement
    phases = JobPhase.__table__
    started = _start_phase(sa.bindparam("x_phase_id", type_=phases.c.id.type))
    return statement.add_cte(started).add_columns(
        sa.select(sa.func.count()).select_from(started).scalar_subquery()
    )


@functools.lru_cache(maxsize=4)
def _claim_context_statement(leading: int) -> sa.Select:
    """PostgreSQL: the claim (``_claim_pending_statement``, RETURNING the step) as a CTE of
    one row (none if the claim did not take) with what ``_context`` needs: the job, its
    organization, agent, creator's activity, integrations' version, whether the
    organization has an active budget limit (none: no first hold), the claimed step's
    phase (which the other data-modifying CTE starts, returning whether it did), the step,
    and the earlier phases' names and outputs. One row, not one a phase of the job: each
    row repeated the job, organization and agent, decoded again (JSON, UUIDs) every time.
    The data-modifying CTEs run once, whatever the query reads of them.

    It also writes the claim's events as ``_context`` builds them: ``leading`` given
    ones (``:type_<k>``, ``:data_<k>``: the first step's job.running), phase.started if
    the phase started, then step.started, numbered under the job row's lock as
    ``append_events`` numbers them, only if the claim took; the row then ends with the
    job's ``event_seq`` and live columns (``state.numbered_events``).
    The job row is locked by this statement then, not by a statement after it: the
    claim writes nothing after its events but the first hold, as before."""
    claimed = _claim_update().returning(*JobStep.__table__.c).cte("claimed_step")
    started = _start_phase(sa.select(claimed.c.phase_id).scalar_subquery())
    step = aliased(JobStep, claimed)
    earlier = JobPhase.__table__.alias("earlier_phase")
    previous = (
        sa.select(
            sa.func.json_agg(
                aggregate_order_by(
                    sa.func.json_build_array(
                        earlier.c.name, sa.func.coalesce(earlier.c.output, "")
                    ),
                    earlier.c.position,
                )
            )
        )
        .where(earlier.c.job_id == JobPhase.job_id, earlier.c.position < JobPhase.position)
        .scalar_subquery()
    )
    # Prepared (planning it cost about as much as running it), its rows still loaded by
    # the ORM as before.
    statement = (
        sa.select(
            Job,
            Organization,
            Agent,
            integrations.version_of(Job.organization_id),
            User.is_active,
            budget.any_active_limit(Job.organization_id),
            JobPhase,
            sa.select(sa.func.count()).select_from(started).scalar_subquery(),
            step,
            previous,
        )
        .add_cte(claimed, started)
        .select_from(step)
        .join(Job, Job.id == step.job_id)
        .join(Organization, Organization.id == Job.organization_id)
        .join(JobPhase, JobPhase.id == step.phase_id)
        .outerjoin(Agent, Agent.id == Job.agent_id)
        .outerjoin(User, User.id == Job.created_by_id)
        .execution_options(populate_existing=True)
    )
    numbered, inserted = _claim_events(claimed, started, leading)
    statement = (
        statement.add_cte(numbered, inserted).add_columns(*numbered.c).join(numbered, sa.true())
    )
    return prepared_orm(statement)


def _claim_events(claimed: Any, started: Any, leading: int) -> tuple[Any, Any]:
    """The claim's events as CTEs (``state.numbered_events``) of ``_claim_context_statement``:
    ``leading`` given ones, phase.started (``started``'s row, if any) and step.started,
    their data as ``_context`` writes it. Returns the numbering CTE and the insert's."""
    phases = JobPhase.__table__
    step_phase = phases.alias("step_phase")
    started_count = sa.select(sa.func.count()).select_from(started).scalar_subquery()

    def key(name: str) -> Any:
        return sa.literal_column(f"'{name}'", sa.String)

    given = [given_event_row(k) for k in range(leading)]
    batch = sa.union_all(
        *given,
        sa.select(
            sa.literal_column(str(leading), sa.Integer).label("k"),
            sa.literal_column("'phase.started'", sa.String).label("type"),
            sa.func.jsonb_build_object(
                key("phase"), started.c.name, key("code"), started.c.code
            ).label("data"),
        ).select_from(started),
        sa.select(
            (started_count + leading).label("k"),
            sa.literal_column("'step.started'", sa.String).label("type"),
            sa.func.jsonb_build_object(
                key("phase"), step_phase.c.name, key("step"), claimed.c.name,
                key("attempt"), claimed.c.attempts, key("worker"), claimed.c.claimed_by,
            ).label("data"),
        ).select_from(claimed.join(step_phase, step_phase.c.id == claimed.c.phase_id)),
    ).subquery("batch")  # fmt: skip
    jobs = Job.__table__
    return numbered_events(
        batch,
        started_count + (leading + 1),
        job_id=sa.bindparam("k_job_id", type_=jobs.c.id.type),
        now=sa.bindparam("k_now", type_=jobs.c.updated_at.type),
        gate=sa.exists(sa.select(claimed.c.id)),
    )


def _start_phase(phase_id: Any) -> Any:
    """The CTE that starts the phase ``phase_id`` (pending -> running at ``:x_now``),
    RETURNING its id: none if it had started already."""
    phases = JobPhase.__table__
    return (
        sa.update(phases)
        .where(phases.c.id == phase_id, phases.c.status == StepStatus.PENDING.value)
        .values(
            status=StepStatus.RUNNING.value,
            started_at=sa.bindparam("x_now", type_=phases.c.started_at.type),
        )
        .returning(phases.c.id, phases.c.name, phases.c.code)
        .cte("started_phase")
    )
