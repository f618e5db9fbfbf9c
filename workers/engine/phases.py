"""A phase's end (the chord body joins it) and the job's end (the chain's last task)."""

from __future__ import annotations

import functools
import uuid
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import (
    Job,
    JobPhase,
    JobStatus,
    JobStep,
    StepStatus,
    utcnow,
)
from models.db import transaction
from models.prepared import execute_prepared
from orchestration.results import build_result
from orchestration.state import (
    append_event,
    set_phase_status,
    transition_job,
)
from workers.engine.core import Outcome


def phase_completed_event(
    phase: JobPhase, *, output: str | None, elapsed_ms: int | None, prompt_tokens: int,
    completion_tokens: int,
) -> tuple[str, dict[str, Any]]:  # fmt: skip
    return (
        "phase.completed",
        {
            "phase": phase.name,
            "code": phase.code,
            # The phase's output travels with its event: a stream prints it as it arrives.
            "output": output,
            "execution_time_ms": elapsed_ms,
            "token_usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        },
    )


def complete_phase(session: Session, *, job_id: uuid.UUID, phase_id: uuid.UUID) -> bool:
    """A chord's phase, once all its steps completed (its tokens are final: no refresh)."""
    phase = session.get(JobPhase, phase_id)
    steps = list(
        session.scalars(
            sa.select(JobStep).where(JobStep.phase_id == phase_id).order_by(JobStep.position)
        )
    )
    if any(s.status != StepStatus.COMPLETED.value for s in steps):
        return False
    output = (
        steps[0].output
        if len(steps) == 1
        else "\n\n".join(f"## {s.name}\n{s.output or ''}" for s in steps)
    )
    now = utcnow()
    elapsed = int((now - phase.started_at).total_seconds() * 1000) if phase.started_at else None
    if not set_phase_status(
        session, phase_id=phase_id, to=StepStatus.COMPLETED, from_=[StepStatus.RUNNING],
        output=output, completed_at=now, execution_time_ms=elapsed,
    ):  # fmt: skip
        return False
    type_, data = phase_completed_event(
        phase, output=output, elapsed_ms=elapsed, prompt_tokens=phase.prompt_tokens,
        completion_tokens=phase.completion_tokens,
    )  # fmt: skip
    append_event(session, job_id=job_id, type=type_, data=data)
    return True


def join_phase(
    sessions: sessionmaker[Session], *, job_id: uuid.UUID, phase_id: uuid.UUID
) -> Outcome:
    """The chord body: every step of the phase has finished; close the phase. The job's
    last phase also ends the job, in the same transaction (no task of its own)."""
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value:
            return Outcome.STOP
        phase = session.get(JobPhase, phase_id)
        if phase is None:
            return Outcome.STOP
        if phase.status == StepStatus.COMPLETED.value:
            return Outcome.CONTINUE
        if not complete_phase(session, job_id=job_id, phase_id=phase_id):
            return Outcome.STOP
        if job.completed_steps >= job.total_steps:
            finish_in(session, job)
        return Outcome.CONTINUE


def finish_in(
    session: Session, job: Job, events: list[tuple[str, dict[str, Any]]] | None = None
) -> bool:
    """The job completed with its result, in the caller's transaction, if every phase is
    (the transaction that completes the last phase calls it: one commit and one task
    hop less than a task of its own). False if a phase is not, or the job is not running.
    ``events``: the caller's events still to write, to which job.completed is added."""
    result = job_result(session, job)
    return result is not None and end_job(session, job, result, events)


def job_result(session: Session, job: Job) -> dict[str, Any] | None:
    """The job's result if every phase is completed, else None. Phases and steps are read
    as plain rows of the columns ``build_result`` reads, in one statement: loading them as
    ORM objects was most of the job's end."""
    rows = execute_prepared(session, _finish_rows_statement(), {"f_job_id": job.id}).all()
    phases = [r for r in rows if not r.is_step]
    if any(p.status != StepStatus.COMPLETED.value for p in phases):
        return None
    return build_result(job, phases, [r for r in rows if r.is_step])


def end_job(
    session: Session,
    job: Job,
    result: dict[str, Any],
    events: list[tuple[str, dict[str, Any]]] | None = None,
) -> bool:
    """``running -> completed`` with ``result`` (``job_result``); job.completed added to
    ``events``, or written by the transition's own statement (``transition_job``)."""
    return transition_job(
        session,
        job_id=job.id,
        to=JobStatus.COMPLETED,
        result=result,
        progress=100,
        event_data={"progress": 100},
        events=events,
    )


# What build_result reads of a phase and of a step (orchestration/results.py).
_PHASE_COLUMNS = ("position", "name", "status", "output", "execution_time_ms")
_STEP_COLUMNS = (
    "position", "status", "output", "spec", "prompt_tokens", "completion_tokens", "cost",
    "completed_at", "provider", "model", "tools_used",
)  # fmt: skip


@functools.cache
def _finish_rows_statement() -> sa.CompoundSelect:
    """The job's phases and steps (``:f_job_id``) as one row set: ``is_step``, then the
    columns of ``_PHASE_COLUMNS`` and ``_STEP_COLUMNS`` (NULL where the table has none)."""
    phases, steps = JobPhase.__table__, JobStep.__table__
    names = dict.fromkeys((*_PHASE_COLUMNS, *_STEP_COLUMNS))

    def part(table: sa.Table, wanted: tuple[str, ...], is_step: bool) -> sa.Select:
        columns = [
            (table.c[n] if n in wanted else sa.cast(sa.null(), _type_of(n))).label(n) for n in names
        ]
        flag = sa.true() if is_step else sa.false()
        return sa.select(flag.label("is_step"), *columns).where(
            table.c.job_id == sa.bindparam("f_job_id", type_=table.c.job_id.type)
        )

    def _type_of(name: str) -> Any:
        return (steps.c[name] if name in steps.c else phases.c[name]).type

    return sa.union_all(part(phases, _PHASE_COLUMNS, False), part(steps, _STEP_COLUMNS, True))


def finish_job(sessions: sessionmaker[Session], *, job_id: uuid.UUID) -> Outcome:
    """The canvas' last task when no phase is left to run (a re-sent or resumed job whose
    phases all completed), and in canvases sent before the last phase ended the job."""
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is not None and job.status == JobStatus.COMPLETED.value:
            return Outcome.CONTINUE  # its last phase ended it
        if job is not None and job.status == JobStatus.QUEUED.value:
            # Resumed after its last step finished while it was paused: nothing is left
            # to run, so it runs (the event) and ends here.
            transition_job(session, job_id=job.id, to=JobStatus.RUNNING)
            session.refresh(job)
        if job is None or job.status != JobStatus.RUNNING.value:
            return Outcome.STOP
        if not finish_in(session, job):
            return Outcome.STOP
    return Outcome.CONTINUE


def fail_job(sessions: sessionmaker[Session], *, job_id: uuid.UUID, reason: str) -> None:
    """The canvas error callback: a task crashed outside the step's own error handling."""
    with transaction(sessions) as session:
        transition_job(
            session, job_id=job_id, to=JobStatus.FAILED, error=reason, event_data={"error": reason}
        )
