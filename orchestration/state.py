"""The job state machine: compare-and-set transitions, each written as an event row.

Every change is an ``UPDATE ... WHERE status IN (...)``: two workers (or a worker and a
cancelling API call) racing on the same row cannot both win, and a redelivered message
finds the transition already made. Nothing here commits; the caller owns the transaction.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Job, JobEvent, JobPhase, JobStatus, JobStep, StepStatus, utcnow
from models.prepared import execute_prepared
from orchestration import live, metrics, webhooks

# Which statuses each status may be entered from.
ALLOWED_FROM: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.QUEUED: frozenset({JobStatus.PENDING, JobStatus.PAUSED}),
    JobStatus.RUNNING: frozenset({JobStatus.QUEUED, JobStatus.PAUSED}),
    JobStatus.PAUSED: frozenset({JobStatus.QUEUED, JobStatus.RUNNING}),
    JobStatus.COMPLETED: frozenset({JobStatus.RUNNING}),
    JobStatus.FAILED: frozenset(
        {JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}
    ),
    JobStatus.CANCELLED: frozenset(
        {JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.PAUSED}
    ),
}


# Transitions that are webhook events (job.*, orchestration.started, agent.completed).
WEBHOOK_STATUSES = frozenset(
    {JobStatus.RUNNING, JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED}
)

_JOBS = Job.__table__
_EVENTS = JobEvent.__table__
_PHASES = JobPhase.__table__
# What a live message says about the job besides the event (see orchestration.live).
LIVE_COLUMNS = (
    _JOBS.c.organization_id, _JOBS.c.agent_id, _JOBS.c.kind, _JOBS.c.title, _JOBS.c.status,
    _JOBS.c.progress,
)  # fmt: skip


def append_event(
    session: Session, *, job_id: uuid.UUID, type: str, data: dict[str, Any] | None = None
) -> int:
    """Number the event from the job's counter (one row lock), then insert it; it goes out
    on the job's live channel (and Socket.IO) once the transaction commits.

    A step writes five or so events: on PostgreSQL the bump and the insert are one
    statement (a data-modifying CTE), a third of the cost of two ORM round trips. The bump
    also returns what the live message needs (organization, agent, status, progress).
    """
    now = utcnow()
    bump = (
        sa.update(_JOBS)
        .where(_JOBS.c.id == job_id)
        .values(event_seq=_JOBS.c.event_seq + 1, updated_at=now)
        .returning(_JOBS.c.event_seq, *LIVE_COLUMNS)
    )
    if session.bind.dialect.name == "postgresql":
        numbered = bump.cte("numbered")
        row = sa.select(
            sa.literal(job_id, _EVENTS.c.job_id.type),
            numbered.c.event_seq,
            sa.literal(type, _EVENTS.c.type.type),
            sa.literal(data or {}, _EVENTS.c.data.type),
            sa.literal(now, _EVENTS.c.created_at.type),
        )
        columns = ["job_id", "seq", "type", "data", "created_at"]
        inserted = (
            sa.insert(_EVENTS)
            .from_select(columns, row, include_defaults=False)
            .returning(_EVENTS.c.seq)
            .cte("inserted")
        )
        live_columns = [numbered.c[c.name] for c in LIVE_COLUMNS]
        both = inserted.join(numbered, sa.true())  # one row each
        result = session.execute(sa.select(inserted.c.seq, *live_columns).select_from(both)).one()
    else:
        result = session.execute(bump).one()
        session.execute(
            sa.insert(_EVENTS).values(
                job_id=job_id, seq=result[0], type=type, data=data or {}, created_at=now
            )
        )
    seq = result[0]
    live.queue_event(
        session,
        {
            "job_id": job_id, "seq": seq, "type": type, "data": data or {}, "created_at": now,
            **{c.name: value for c, value in zip(LIVE_COLUMNS, result[1:], strict=True)},
        },
    )  # fmt: skip
    return seq


class Appended(NamedTuple):
    seqs: list[int]
    status: str | None  # the job's, read under the row lock the numbering takes


def append_events(
    session: Session, *, job_id: uuid.UUID, events: Sequence[tuple[str, dict[str, Any] | None]]
) -> Appended:
    """Several events of one job, numbered in the order given, in one statement: one bump
    of the job's counter by their number and one multi-row insert (``append_event`` for
    one). A caller writes them last in its transaction, before the budget settlement, so
    the job row's lock (which orders a job's events for every reader) is held for as
    short a time as possible: the steps of one chord wait on it for one statement."""
    if not events:
        return Appended([], None)
    now = utcnow()
    count = len(events)
    if session.bind.dialect.name != "postgresql":
        bump = (
            sa.update(_JOBS)
            .where(_JOBS.c.id == job_id)
            .values(event_seq=_JOBS.c.event_seq + count, updated_at=now)
            .returning(_JOBS.c.event_seq, *LIVE_COLUMNS)
        )
        row = session.execute(bump).one()
        first = row[0] - count + 1
        session.execute(
            sa.insert(_EVENTS),
            [
                {"job_id": job_id, "seq": first + k, "type": t, "data": d or {}, "created_at": now}
                for k, (t, d) in enumerate(events)
            ],
        )
        live_values = row[1:]
    else:
        params: dict[str, Any] = {"job_id": job_id, "now": now, **given_event_params(events)}
        written = execute_prepared(session, _append_events_statement(count), params).all()
        first, live_values = min(r[0] for r in written), written[0][1:]
    return queue_live_events(
        session, job_id=job_id, events=events, first=first, now=now, live_values=live_values
    )


def queue_live_events(
    session: Session,
    *,
    job_id: uuid.UUID,
    events: Sequence[tuple[str, dict[str, Any] | None]],
    first: int,
    now: datetime,
    live_values: Sequence[Any],
) -> Appended:
    """Events written numbered from ``first`` (by ``append_events``, or by a caller's
    statement built with ``numbered_events``), queued for the live channels after commit.
    ``live_values``: the job's ``LIVE_COLUMNS`` as the numbering's UPDATE returned them."""
    live_of = {c.name: value for c, value in zip(LIVE_COLUMNS, live_values, strict=True)}
    for k, (t, d) in enumerate(events):
        live.queue_event(
            session,
            {"job_id": job_id, "seq": first + k, "type": t, "data": d or {}, "created_at": now,
             **live_of},
        )  # fmt: skip
    return Appended([first + k for k in range(len(events))], live_of["status"])


def given_event_params(events: Sequence[tuple[str, dict[str, Any] | None]]) -> dict[str, str]:
    """The parameters of ``given_event_row(k)`` for each of ``events``, in order."""
    params: dict[str, str] = {}
    for k, (t, d) in enumerate(events):
        params[f"type_{k}"], params[f"data_{k}"] = t, json.dumps(d or {}, default=str)
    return params


def given_event_row(k: int) -> sa.Select:
    """The ``k``-th given event as a row of a ``numbered_events`` batch: ``k``,
    ``:type_<k>`` and ``:data_<k>`` (JSON text, as JSONB); ``given_event_params``."""
    return sa.select(
        sa.literal_column(str(k), sa.Integer).label("k"),
        sa.bindparam(f"type_{k}", type_=sa.String).label("type"),
        sa.cast(sa.bindparam(f"data_{k}", type_=sa.String), _EVENTS.c.data.type).label("data"),
    )


def numbered_events(
    batch: sa.Subquery,
    count: Any,
    *,
    job_id: sa.BindParameter[Any],
    now: sa.BindParameter[Any],
    gate: Any,
) -> tuple[sa.CTE, sa.CTE]:
    """``append_events``' numbering as CTEs of a caller's statement, for events whose rows
    that statement computes: ``batch`` has columns ``k`` (0, 1, ... in order), ``type``
    and ``data`` (JSONB); ``count`` is its number of rows. Written only if ``gate``
    holds. Returns the numbering CTE (the job row's UPDATE, which takes its lock as
    ``append_events`` does; RETURNING ``event_seq`` and ``LIVE_COLUMNS``: the rows are
    numbered ``event_seq - count + 1 + k``) and the insert's."""
    numbered = (
        sa.update(_JOBS)
        .where(_JOBS.c.id == job_id, gate)
        .values(event_seq=_JOBS.c.event_seq + count, updated_at=now)
        .returning(_JOBS.c.event_seq, *LIVE_COLUMNS)
        .cte("numbered")
    )
    rows = sa.select(
        job_id, numbered.c.event_seq - count + 1 + batch.c.k, batch.c.type, batch.c.data, now
    ).select_from(numbered.join(batch, sa.true()))
    inserted = (
        sa.insert(_EVENTS)
        .from_select(["job_id", "seq", "type", "data", "created_at"], rows)
        .returning(_EVENTS.c.seq)
        .cte("inserted")
    )
    return numbered, inserted


@functools.lru_cache(maxsize=16)
def _append_events_statement(count: int) -> sa.Select:
    """``append_events``' statement for ``count`` events, built once: the bump of the
    job's counter, the rows (``:type_<k>``, ``:data_<k>`` as JSON text) numbered from it,
    and what the live messages need. Built per call (the rows as a literal VALUES list) it
    was compiled afresh every time: the statement cache never matched."""
    now = sa.bindparam("now", type_=_EVENTS.c.created_at.type)
    batch = sa.union_all(*(given_event_row(k) for k in range(count))).subquery("batch")
    numbered, inserted = numbered_events(
        batch, count, job_id=sa.bindparam("job_id", type_=_JOBS.c.id.type), now=now, gate=sa.true()
    )
    live_columns = [numbered.c[c.name] for c in LIVE_COLUMNS]
    return sa.select(inserted.c.seq, *live_columns).select_from(inserted.join(numbered, sa.true()))


def transition_job(
    session: Session,
    *,
    job_id: uuid.UUID,
    to: JobStatus,
    event_data: dict[str, Any] | None = None,
    events: list[tuple[str, dict[str, Any]]] | None = None,
    **values: Any,
) -> bool:
    """Move the job to ``to`` if its current status allows it; False if another got there.
    ``events``: the caller's list of events still to write (``append_events``), to which
    the ``job.<status>`` event is added instead of being written here. Otherwise, on
    PostgreSQL, the transition's own statement numbers and writes it (the job row's
    UPDATE bumps ``event_seq``: one statement, the same lock)."""
    now = utcnow()
    extra: dict[str, Any] = {"updated_at": now, **values}
    if to in (JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED):
        extra.setdefault("finished_at", now)
    dialect = session.bind.dialect.name
    custom = any(isinstance(v, sa.ClauseElement) for v in extra.values())
    if custom:
        statement = _transition_statement(to, (), dialect)  # a caller's own SQL: built here
        if to == JobStatus.RUNNING:
            extra.setdefault("started_at", sa.func.coalesce(Job.started_at, now))
        statement = statement.values(**extra)
        params: dict[str, Any] = {"t_job_id": job_id}
    else:
        keys = tuple(sorted(extra))
        params = {"t_job_id": job_id, "t_now": now, **{f"t_{k}": extra[k] for k in keys}}
        statement = _transition_statement(to, keys, dialect)
    event = (f"job.{to.value}", {"status": to.value, **(event_data or {})})
    with_event = events is None and dialect == "postgresql" and not custom
    if with_event:
        statement = _transition_event_statement(to, tuple(sorted(extra)))
        params |= {"e_type": event[0], "e_data": json.dumps(event[1], default=str)}
    row = session.execute(statement, params).first()
    changed = row is not None
    if changed:
        metrics.count_on_commit(session, metrics.JOBS, kind=row[0], status=to.value)
        if events is not None:
            events.append(event)
        elif with_event:  # written by the statement: announced after commit
            live_values = row[-len(LIVE_COLUMNS) :]
            first = row[-len(LIVE_COLUMNS) - 1]
            queue_live_events(
                session, job_id=job_id, events=[event], first=first, now=now,
                live_values=live_values,
            )  # fmt: skip
        else:
            append_event(session, job_id=job_id, type=event[0], data=event[1])
        if to in WEBHOOK_STATUSES:  # the outbox row commits with the transition
            webhooks.record_job_transition(
                session, job_id=job_id, status=to.value, known=_webhook_row(row)
            )
    return bool(changed)


def _returning(dialect: str) -> list[Any]:
    """A transition's RETURNING: the job's kind and, on PostgreSQL, what the webhook
    outbox reads of it (``webhooks.transition_columns``: no read after the UPDATE);
    SQLite takes no subquery there."""
    if dialect != "postgresql":
        return [_JOBS.c.kind]
    return [_JOBS.c.kind, *(c.label(f"w_{k}") for k, c in enumerate(webhooks.transition_columns()))]


def _webhook_row(row: Any) -> Any:
    """The RETURNING's webhook columns (``_returning``), or None where it has none."""
    return None if len(row) == 1 else tuple(row)[1 : 1 + len(webhooks.transition_columns())]


@functools.lru_cache(maxsize=64)
def _transition_event_statement(to: JobStatus, keys: tuple[str, ...]) -> sa.Select:
    """PostgreSQL: ``_transition_statement`` that also numbers and inserts the
    transition's event (``:e_type``, ``:e_data`` as JSON text, at ``:t_now``) as
    ``append_event`` does: the job row's UPDATE bumps ``event_seq``, the insert takes
    the number from its RETURNING, only if the transition was made. Its row: the
    transition's RETURNING, then ``event_seq`` and ``LIVE_COLUMNS``."""
    transitioned = (
        _transition_statement(to, keys, "postgresql")
        .values(event_seq=_JOBS.c.event_seq + 1)
        .returning(_JOBS.c.event_seq, *LIVE_COLUMNS)
        .cte("transitioned")
    )
    written = sa.insert(_EVENTS).from_select(
        ["job_id", "seq", "type", "data", "created_at"],
        sa.select(
            sa.bindparam("t_job_id", type_=_EVENTS.c.job_id.type),
            transitioned.c.event_seq,
            sa.bindparam("e_type", type_=sa.String),
            sa.cast(sa.bindparam("e_data", type_=sa.String), _EVENTS.c.data.type),
            sa.bindparam("t_now", type_=_EVENTS.c.created_at.type),
        ).select_from(transitioned),
    )
    return sa.select(*transitioned.c).add_cte(written.cte("transition_event"))


@functools.lru_cache(maxsize=64)
def _transition_statement(to: JobStatus, keys: tuple[str, ...], dialect: str) -> sa.Update:
    """``transition_job``'s compare-and-set for ``to``, setting ``keys`` from parameters
    (``:t_<key>``), built once per shape: building it per call (and through the ORM's
    bulk UPDATE) cost more Python than the round trip. ``keys`` empty: the caller adds
    its own values."""
    values: dict[str, Any] = {"status": to.value}
    values |= {k: sa.bindparam(f"t_{k}", type_=_JOBS.c[k].type) for k in keys}
    if keys and to == JobStatus.RUNNING and "started_at" not in keys:
        now = sa.bindparam("t_now", type_=_JOBS.c.started_at.type)
        values["started_at"] = sa.func.coalesce(_JOBS.c.started_at, now)
    statement = (
        sa.update(_JOBS)
        .where(
            _JOBS.c.id == sa.bindparam("t_job_id", type_=_JOBS.c.id.type),
            _JOBS.c.status.in_(sorted(s.value for s in ALLOWED_FROM[to])),
        )
        .returning(*_returning(dialect))
    )
    return statement.values(**values)


def start_queued_job(
    session: Session, *, job_id: uuid.UUID, step_id: uuid.UUID, now: datetime
) -> tuple[str, dict[str, Any]] | None:
    """``queued -> running`` for the first step of a job, if that step is pending: the
    compare-and-set ``transition_job`` makes, in one statement with no read before it.
    Returns the ``job.running`` event for the caller to write first with its own
    events (one numbering statement for all), or None if the job was not queued or the
    step not pending (the caller looks closer)."""
    row = session.execute(
        _start_queued_statement(session.bind.dialect.name),
        {"q_job_id": job_id, "q_step_id": step_id, "q_now": now},
    ).first()
    if row is None:
        return None
    metrics.count_on_commit(session, metrics.JOBS, kind=row[0], status=JobStatus.RUNNING.value)
    webhooks.record_job_transition(
        session, job_id=job_id, status=JobStatus.RUNNING.value, known=_webhook_row(row)
    )
    return (f"job.{JobStatus.RUNNING.value}", {"status": JobStatus.RUNNING.value})


@functools.lru_cache(maxsize=2)
def _start_queued_statement(dialect: str) -> sa.Update:
    steps = JobStep.__table__
    job_id = sa.bindparam("q_job_id", type_=_JOBS.c.id.type)
    now = sa.bindparam("q_now", type_=_JOBS.c.updated_at.type)
    step_pending = (
        sa.select(steps.c.id)
        .where(
            steps.c.id == sa.bindparam("q_step_id", type_=steps.c.id.type),
            steps.c.job_id == job_id,
            steps.c.status == StepStatus.PENDING.value,
        )
        .exists()
    )
    return (
        sa.update(_JOBS)
        .where(_JOBS.c.id == job_id, _JOBS.c.status == JobStatus.QUEUED.value, step_pending)
        .values(
            status=JobStatus.RUNNING.value,
            started_at=sa.func.coalesce(_JOBS.c.started_at, now),
            updated_at=now,
        )
        .returning(*_returning(dialect))
    )


def job_status(session: Session, job_id: uuid.UUID) -> JobStatus | None:
    status = session.scalar(sa.select(Job.status).where(Job.id == job_id))
    return JobStatus(status) if status else None


def set_step_status(
    session: Session,
    *,
    step_id: uuid.UUID,
    to: StepStatus,
    from_: Iterable[StepStatus],
    **values: Any,
) -> bool:
    job_kind = sa.select(Job.kind).where(Job.id == JobStep.job_id).scalar_subquery()
    kind = session.execute(
        sa.update(JobStep)
        .where(JobStep.id == step_id, JobStep.status.in_([s.value for s in from_]))
        .values(status=to.value, **values)
        .returning(job_kind)
        .execution_options(synchronize_session=False)
    ).scalar()
    if kind is not None:
        metrics.count_on_commit(session, metrics.STEPS, kind=kind, status=to.value)
    return kind is not None


def set_phase_status(
    session: Session,
    *,
    phase_id: uuid.UUID,
    to: StepStatus,
    from_: Iterable[StepStatus],
    **values: Any,
) -> bool:
    froms = tuple(sorted(s.value for s in from_))
    if any(isinstance(v, sa.ClauseElement) for v in values.values()):
        statement = _phase_status_statement(to, froms, ()).values(**values)
        params: dict[str, Any] = {"s_phase_id": phase_id}
    else:
        keys = tuple(sorted(values))
        statement = _phase_status_statement(to, froms, keys)
        params = {"s_phase_id": phase_id, **{f"s_{k}": values[k] for k in keys}}
    return bool(session.execute(statement, params).rowcount)


@functools.lru_cache(maxsize=64)
def _phase_status_statement(
    to: StepStatus, froms: tuple[str, ...], keys: tuple[str, ...]
) -> sa.Update:
    """``set_phase_status``' compare-and-set, built once per shape (``:s_<key>``)."""
    return (
        sa.update(_PHASES)
        .where(
            _PHASES.c.id == sa.bindparam("s_phase_id", type_=_PHASES.c.id.type),
            _PHASES.c.status.in_(froms),
        )
        .values(
            status=to.value,
            **{k: sa.bindparam(f"s_{k}", type_=_PHASES.c[k].type) for k in keys},
        )
    )


def cancel_open_steps(session: Session, *, job_id: uuid.UUID, reason: str) -> None:
    """Every open step and phase ends ``cancelled``, the ones in flight too: a call that
    returns after the cancel keeps its answer and cost on the cancelled step, and the
    history says it came back after the stop (workers/engine/)."""
    open_states = [StepStatus.PENDING.value, StepStatus.RUNNING.value]
    session.execute(
        sa.update(JobStep)
        .where(JobStep.job_id == job_id, JobStep.status.in_(open_states))
        .values(status=StepStatus.CANCELLED.value, error=reason)
        .execution_options(synchronize_session=False)
    )
    session.execute(
        sa.update(JobPhase)
        .where(JobPhase.job_id == job_id, JobPhase.status.in_(open_states))
        .values(status=StepStatus.CANCELLED.value)
        .execution_options(synchronize_session=False)
    )
