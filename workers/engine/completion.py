"""A step's end: its answer, usage and progress written together (only if the job is
still running: a cancel that landed meanwhile wins), or its failure, which fails the
phase and the job; and the budget settlement that closes either."""

from __future__ import annotations

import functools
import json
import time
import uuid
from contextlib import nullcontext
from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    Job,
    JobEvent,
    JobPhase,
    JobStatus,
    JobStep,
    StepStatus,
    UsageRecord,
    utcnow,
)
from models.db import transaction
from models.prepared import execute_prepared
from orchestration import budget, metrics
from orchestration.state import (
    LIVE_COLUMNS,
    append_event,
    append_events,
    given_event_params,
    given_event_row,
    queue_live_events,
    set_phase_status,
    set_step_status,
    transition_job,
)
from workers import chat, ledger
from workers.engine.core import Outcome, StepContext, through_outage
from workers.engine.phases import end_job, finish_in, job_result, phase_completed_event
from workers.providers import (
    CompletionResult,
    ProviderError,
)

if TYPE_CHECKING:
    from workers.engine.provider_hooks import StepCalls


def limit_reached(session: Session, ctx: StepContext, limit_id: str) -> None:
    alert = budget.limit_reached_alert(session, limit_id=limit_id)
    if alert is not None:
        append_event(session, job_id=ctx.job.id, type="budget_alert", data=alert.data)


def complete_step(
    sessions: sessionmaker[Session],
    ctx: StepContext,
    *,
    output: str,
    result: CompletionResult | None,
    elapsed_ms: int,
    calls: StepCalls | None = None,
    again: bool = False,
    tools_used: list[str] | None = None,
) -> Outcome:
    step, job = ctx.step, ctx.job
    now = utcnow()
    call_key = ctx.call_key(result.attempt_number) if result else None
    # The step's usage: the answer, plus what failed attempts cost (cut streams).
    earlier_prompt, earlier_completion, earlier_cost = (
        calls.charged_totals() if calls else (0, 0, Decimal(0))
    )
    kept = calls.keeping_progress() if calls is not None else nullcontext()
    with kept, transaction(sessions) as session:
        written = _already_written(session, step.id, call_key) if again else None
        if written is not None:
            return written
        # Money spent is in the ledger even if the job was cancelled meanwhile.
        spent = None
        if result is not None:
            spent = ledger.usage_params(
                job=job, step=step, call_key=call_key, provider=result.provider,
                model=result.model, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, cost=result.cost,
            )  # fmt: skip
        usage = {
            "provider": result.provider if result else None,
            "model": result.model if result else None,
            "prompt_tokens": (result.prompt_tokens if result else 0) + earlier_prompt,
            "completion_tokens": (result.completion_tokens if result else 0) + earlier_completion,
            "cost": (result.cost if result else Decimal(0)) + earlier_cost,
        }
        if tools_used is not None:
            usage["tools_used"] = tools_used
        # A job paused meanwhile keeps the finished (and paid-for) step; a cancelled or
        # failed one does not. The UPDATE returns the number of steps of the phase.
        dialect = session.bind.dialect.name
        params = {
            "c_step_id": step.id, "c_job_id": job.id, "c_output": output, "c_now": now,
            "c_elapsed_ms": elapsed_ms, **{f"c_{k}": v for k, v in usage.items()},
        }  # fmt: skip
        phase = ctx.phase
        elapsed = int((now - phase.started_at).total_seconds() * 1000) if phase.started_at else None
        # The streamed text not yet written, then the answered attempt, before the rest.
        events = calls.answer_events() if calls is not None else []
        event = _step_completed_event(
            ctx, result, usage, elapsed_ms=elapsed_ms, earlier_cost=earlier_cost,
            tools_used=tools_used,
        )  # fmt: skip
        if dialect == "postgresql":
            # Ledger row, step, phase, job counters and the step's events in one statement
            # (data-modifying CTEs): one round trip instead of five, the same rows written
            # in the same order. The progress and the phase's tokens in the events come
            # from the statement's own UPDATEs.
            template = phase_completed_event(
                phase, output=output, elapsed_ms=elapsed, prompt_tokens=0, completion_tokens=0
            )[1]
            params |= _phase_params(phase, usage, output=output, now=now, elapsed=elapsed)
            params |= {"j_job_id": job.id, "j_now": now, **(spent or {})}
            params |= {
                "e_step": json.dumps(event, default=str),
                "e_phase": json.dumps(template, default=str),
                **given_event_params(events),
            }  # fmt: skip
            row = execute_prepared(
                session,
                _complete_all_statement(spent is not None, tools_used is not None, len(events)),
                params,
            ).one()
            (siblings, closed_prompt, closed_completion, progress, status, completed, total) = row[
                :7
            ]
        else:  # the embedded SQLite: no UPDATE inside a WITH, one statement each
            if spent is not None:
                ledger.record_usage(session, usage=spent)
            counted = session.execute(
                _complete_statement(dialect, tools_used is not None), params
            ).scalar()
            # It takes no subquery in RETURNING: the phase's steps counted after.
            siblings = (
                None
                if counted is None
                else session.scalar(
                    sa.select(sa.func.count(JobStep.id)).where(JobStep.phase_id == counted)
                )
            )
        if siblings is None:
            # The job was cancelled (or failed) while the call was in flight: the answer
            # is kept on the cancelled step, its cost is in the ledger, and the history
            # says it came back after the stop.
            set_step_status(
                session, step_id=step.id, to=StepStatus.CANCELLED,
                from_=[StepStatus.RUNNING, StepStatus.CANCELLED],
                output=output, completed_at=now, execution_time_ms=elapsed_ms, **usage,
            )  # fmt: skip
            job_status = session.scalar(sa.select(Job.status).where(Job.id == job.id))
            events.append(
                (
                    "step.returned_after_stop",
                    {
                        "phase": ctx.phase.name, "step": step.name, "job_status": job_status,
                        "provider": usage["provider"], "model": usage["model"],
                        "cost": str(usage["cost"]), "call_key": call_key,
                        "recorded_in_ledger": result is not None,
                    },
                )
            )  # fmt: skip
            append_events(session, job_id=job.id, events=events)
            if chat.is_chat(ctx):
                chat.reply_failed(
                    session, ctx, error=f"JOB_{str(job_status).upper()}: the reply's job stopped",
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"], cost=usage["cost"],
                )  # fmt: skip
            if result is not None:
                settle(session, ctx, call_key, result.cost)
            return Outcome.STOP
        metrics.count_on_commit(session, metrics.STEPS, kind=job.kind, status="completed")
        if dialect == "postgresql":
            event["progress"] = progress
            events.append(("step.completed", event))
            phase_done = None
            if closed_prompt is not None:  # the step's only one: it closed the phase
                phase_done = phase_completed_event(
                    phase, output=output, elapsed_ms=elapsed, prompt_tokens=closed_prompt,
                    completion_tokens=closed_completion,
                )  # fmt: skip
                events.append(phase_done)
            # The job's last step (a one-step last phase; a chord's last phase is ended by
            # its join): the job ends in this transaction, its job.completed the next event.
            ending = (
                job_result(session, job)
                if phase_done is not None
                and status == JobStatus.RUNNING.value
                and completed >= total
                else None
            )
            live_values = row[8:]
            if ending is not None:
                # The live messages say what the job is at commit, as when these events
                # were numbered after the job's end: completed, at 100 %. (The end is
                # certain: the job is running under the row lock the statement took.)
                at_end = {"status": JobStatus.COMPLETED.value, "progress": 100}
                live_values = tuple(
                    at_end.get(c.name, v) for c, v in zip(LIVE_COLUMNS, live_values, strict=True)
                )
            # Written by the statement from the same values: announced after commit,
            # before job.completed (the transition's statement writes and queues it).
            queue_live_events(
                session, job_id=job.id, events=events, first=row[7] - len(events) + 1,
                now=now, live_values=live_values,
            )  # fmt: skip
            if ending is not None:
                end_job(session, job, ending)
        else:
            phase_done = _add_to_phase(
                session, ctx, usage, output=output, now=now, elapsed=elapsed,
                alone=siblings == 1,
            )  # fmt: skip
            # The job row last but the budget's: the steps of a chord wait on it (it
            # orders the job's events) for these two statements only.
            progress, status, completed, total = session.execute(
                _count_step_statement(dialect), {"j_job_id": job.id, "j_now": now}
            ).one()
            event["progress"] = progress
            events.append(("step.completed", event))
            if phase_done is not None:
                events.append(phase_done)
                if status == JobStatus.RUNNING.value and completed >= total:
                    # The job's last step: it ends in this transaction, its job.completed
                    # the last of the step's events.
                    finish_in(session, job, events)
            append_events(session, job_id=job.id, events=events)
        if chat.is_chat(ctx):  # the reply message, and the conversation's next reply
            chat.reply_written(session, ctx, text=output, usage=usage)
        if result is not None:
            settle(session, ctx, call_key, result.cost)
    # Paused meanwhile: the chain stops here and resume sends the rest.
    return Outcome.CONTINUE if status == JobStatus.RUNNING.value else Outcome.STOP


def _step_completed_event(
    ctx: StepContext,
    result: CompletionResult | None,
    usage: dict[str, Any],
    *,
    elapsed_ms: int,
    earlier_cost: Decimal,
    tools_used: list[str] | None,
) -> dict[str, Any]:
    """step.completed's data; its ``progress`` (None here) is the job's after the step."""
    event: dict[str, Any] = {
        "phase": ctx.phase.name,
        "step": ctx.step.name,
        "progress": None,
        "execution_time_ms": elapsed_ms,
    }
    if result is not None:
        event |= {
            "provider": result.provider,
            "model": result.model,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens,
            "cost": str(result.cost),
            "attempts": result.attempts,
            "providers_tried": result.providers_tried,
        }
        if result.skipped:
            event["skipped"] = result.skipped
        if result.usage_estimated:
            event["usage_estimated"] = True
        if earlier_cost:
            event["step_cost"] = str(usage["cost"])
        if tools_used is not None:
            event["tools_used"] = tools_used
    return event


def _phase_params(
    phase: JobPhase, usage: dict[str, Any], *, output: str, now: datetime, elapsed: int | None
) -> dict[str, Any]:
    return {
        "p_phase_id": phase.id,
        "p_prompt_tokens": usage["prompt_tokens"],
        "p_completion_tokens": usage["completion_tokens"],
        "p_cost": usage["cost"],
        "p_output": output,
        "p_now": now,
        "p_elapsed_ms": elapsed,
    }


def _add_to_phase(
    session: Session,
    ctx: StepContext,
    usage: dict[str, Any],
    *,
    output: str,
    now: datetime,
    elapsed: int | None,
    alone: bool,
) -> tuple[str, dict[str, Any]] | None:
    """The step's usage added to its phase; the only step of its phase also completes it
    in the same statement (a chord's phase is joined by ``join_phase``). Returns the
    ``phase.completed`` event if it did. (SQLite; on PostgreSQL ``_complete_all_statement``
    does the same.)"""
    phase = ctx.phase
    params = _phase_params(phase, usage, output=output, now=now, elapsed=elapsed)
    tokens = {
        k: params[k] for k in ("p_phase_id", "p_prompt_tokens", "p_completion_tokens", "p_cost")
    }
    if alone:
        done = session.execute(_complete_phase_statement(), params).one_or_none()
        if done is not None:
            return phase_completed_event(
                phase, output=output, elapsed_ms=elapsed, prompt_tokens=done[0],
                completion_tokens=done[1],
            )  # fmt: skip
    session.execute(_add_to_phase_statement(), tokens)
    return None


# The completion's statements, built once (with parameters) instead of on every step:
# building them was about a tenth of a step's Python (SQLAlchemy's coercions), and the
# ORM's bulk UPDATE path more. Core statements on the tables; nothing reads them back
# through the session's identity map.
_STEPS = JobStep.__table__
_PHASES = JobPhase.__table__
_JOBS = Job.__table__
_EVENTS = JobEvent.__table__
_USAGE_COLUMNS = ("provider", "model", "prompt_tokens", "completion_tokens", "cost")


def _param(name: str, column: sa.Column[Any]) -> sa.BindParameter[Any]:
    return sa.bindparam(name, type_=column.type)


@functools.lru_cache(maxsize=8)
def _complete_statement(dialect: str, with_tools: bool) -> sa.Update:
    """The step completed if it is running and its job running or paused; RETURNING the
    number of steps of its phase (PostgreSQL) or its phase's id (SQLite, which takes no
    subquery there)."""
    statement = _complete_update(with_tools)
    if dialect != "postgresql":
        return statement.returning(_STEPS.c.phase_id)
    return statement.returning(_phase_size())


def _complete_update(with_tools: bool) -> sa.Update:
    job_running = (
        sa.select(_JOBS.c.id)
        .where(
            _JOBS.c.id == _param("c_job_id", _JOBS.c.id),
            # Two comparisons, not IN: an IN list's parameters are expanded at each
            # execution, which a prepared statement (models/prepared.py) cannot take.
            sa.or_(
                _JOBS.c.status == JobStatus.RUNNING.value, _JOBS.c.status == JobStatus.PAUSED.value
            ),
        )
        .exists()
    )
    columns = [*_USAGE_COLUMNS, "tools_used"] if with_tools else list(_USAGE_COLUMNS)
    return (
        sa.update(_STEPS)
        .where(
            _STEPS.c.id == _param("c_step_id", _STEPS.c.id),
            _STEPS.c.status == StepStatus.RUNNING.value,
            job_running,
        )
        .values(
            status=StepStatus.COMPLETED.value,
            output=_param("c_output", _STEPS.c.output),
            completed_at=_param("c_now", _STEPS.c.completed_at),
            execution_time_ms=_param("c_elapsed_ms", _STEPS.c.execution_time_ms),
            error=None,
            **{c: _param(f"c_{c}", _STEPS.c[c]) for c in columns},
        )
    )


def _phase_size() -> sa.ScalarSelect[int]:
    """In the step's UPDATE ... RETURNING: the number of steps of its phase."""
    others = _STEPS.alias("others")
    return (
        sa.select(sa.func.count(others.c.id))
        .where(others.c.phase_id == _STEPS.c.phase_id)
        .scalar_subquery()
    )


@functools.lru_cache(maxsize=32)
def _complete_all_statement(with_ledger: bool, with_tools: bool, leading: int) -> sa.Select:
    """PostgreSQL: the completion's writes in one statement, each a data-modifying CTE as
    its own statement was (same conditions, same values). The ledger row (``u_*``,
    whatever the step's fate: the call was paid for); the step (``_complete_statement``),
    RETURNING its phase's size; if it completed, the phase: closed with its tokens if the
    step is its only one and it is running (``_complete_phase_statement``), else its
    tokens added (``_add_to_phase_statement``, never both: it waits on the first's empty
    result); and the job's counters (``_count_step_statement``), written after the phase
    (its WHERE reads the phase CTEs first), as before: the job row is the one a chord's
    steps queue on. One row: the phase's size (NULL: the step was not running or the job
    not running or paused), the closed phase's tokens (NULL: not closed), the job's
    progress, status, completed and total steps (NULL if the step did not complete).

    The step's events too, numbered as ``append_events`` numbers them (one bump of the
    job's ``event_seq``, here in the counters' own UPDATE: a row is updated once a
    statement; its lock orders the job's events), only if the step completed:
    ``leading`` events given whole (``:type_<k>``, ``:data_<k>``: streamed text, the
    answered attempt), step.completed (``:e_step`` with the job's new progress) and, if
    the phase closed, phase.completed (``:e_phase`` with the phase's tokens). The row
    then ends with the job's ``event_seq`` and ``state.LIVE_COLUMNS`` (NULL if not)."""
    step = (
        _complete_update(with_tools)
        .returning(_phase_size().label("siblings"))
        .cte("completed_step")
    )
    step_done = sa.exists(sa.select(step.c.siblings))
    closed = (
        sa.update(_PHASES)
        .where(
            _PHASES.c.id == _param("p_phase_id", _PHASES.c.id),
            _PHASES.c.status == StepStatus.RUNNING.value,
            sa.select(step.c.siblings).scalar_subquery() == 1,
        )
        .values(**_phase_close_values())
        .returning(_PHASES.c.prompt_tokens, _PHASES.c.completion_tokens)
        .cte("closed_phase")
    )
    added = (
        sa.update(_PHASES)
        .where(
            _PHASES.c.id == _param("p_phase_id", _PHASES.c.id),
            step_done,
            ~sa.exists(sa.select(closed.c.prompt_tokens)),
        )
        .values(**_phase_tokens())
        .returning(_PHASES.c.id)
        .cte("added_phase")
    )
    phase_written = (
        sa.select(sa.func.count()).select_from(added).scalar_subquery()
        + sa.select(sa.func.count()).select_from(closed).scalar_subquery()
    )
    closed_count = sa.select(sa.func.count()).select_from(closed).scalar_subquery()
    count = closed_count + (leading + 1)
    counted = (
        _count_update("postgresql")
        .values(event_seq=_JOBS.c.event_seq + count)
        .where(step_done, phase_written >= 0)
        .returning(
            _JOBS.c.progress,
            _JOBS.c.status,
            _JOBS.c.completed_steps,
            _JOBS.c.total_steps,
            _JOBS.c.event_seq,
            *LIVE_COLUMNS,
        )  # fmt: skip
        .cte("counted_job")
    )
    inserted = _step_events(counted, closed, count, leading)
    one = sa.select(sa.literal_column("1").label("one")).subquery("one")
    statement = sa.select(
        sa.select(step.c.siblings).scalar_subquery(),
        sa.select(closed.c.prompt_tokens).scalar_subquery(),
        sa.select(closed.c.completion_tokens).scalar_subquery(),
        counted.c.progress,
        counted.c.status,
        counted.c.completed_steps,
        counted.c.total_steps,
        counted.c.event_seq,
        *(counted.c[c.name] for c in LIVE_COLUMNS),
    ).select_from(one.outerjoin(counted, sa.true()))
    if with_ledger:
        statement = statement.add_cte(ledger.insert_statement().cte("ledger_row"))
    return statement.add_cte(step, closed, added, counted, inserted)


def _step_events(counted: Any, closed: Any, count: Any, leading: int) -> Any:
    """The completion's events as an INSERT CTE (rows only if ``counted`` has one, i.e.
    the step completed), numbered ``event_seq - count + 1 + k`` from the counters'
    UPDATE: ``leading`` given events, step.completed, and phase.completed if ``closed``."""
    jsonb = _EVENTS.c.data.type

    def key(name: str) -> Any:
        return sa.literal_column(f"'{name}'", sa.String)

    step_data = sa.func.jsonb_set(
        sa.cast(sa.bindparam("e_step", type_=sa.String), jsonb),
        sa.literal_column("ARRAY['progress']"),
        sa.func.to_jsonb(counted.c.progress),
    )
    phase_data = sa.func.jsonb_set(
        sa.cast(sa.bindparam("e_phase", type_=sa.String), jsonb),
        sa.literal_column("ARRAY['token_usage']"),
        sa.func.jsonb_build_object(
            key("prompt_tokens"), closed.c.prompt_tokens,
            key("completion_tokens"), closed.c.completion_tokens,
            key("total_tokens"), closed.c.prompt_tokens + closed.c.completion_tokens,
        ),
    )  # fmt: skip
    batch = sa.union_all(
        *(given_event_row(k) for k in range(leading)),
        sa.select(
            sa.literal_column(str(leading), sa.Integer).label("k"),
            sa.literal_column("'step.completed'", sa.String).label("type"),
            step_data.label("data"),
        ).select_from(counted),
        sa.select(
            sa.literal_column(str(leading + 1), sa.Integer).label("k"),
            sa.literal_column("'phase.completed'", sa.String).label("type"),
            phase_data.label("data"),
        ).select_from(closed),
    ).subquery("batch")
    return (
        sa.insert(_EVENTS)
        .from_select(
            ["job_id", "seq", "type", "data", "created_at"],
            sa.select(
                _param("j_job_id", _EVENTS.c.job_id),
                counted.c.event_seq - count + 1 + batch.c.k,
                batch.c.type,
                batch.c.data,
                _param("j_now", _EVENTS.c.created_at),
            ).select_from(counted.join(batch, sa.true())),
        )
        .returning(_EVENTS.c.seq)
        .cte("inserted_events")
    )


@functools.lru_cache(maxsize=4)
def _count_step_statement(dialect: str) -> sa.Update:
    """The job's counters after a completed step, RETURNING its progress and status."""
    return _count_update(dialect).returning(
        _JOBS.c.progress, _JOBS.c.status, _JOBS.c.completed_steps, _JOBS.c.total_steps
    )


def _count_update(dialect: str) -> sa.Update:
    least, greatest = (
        (sa.func.min, sa.func.max) if dialect == "sqlite" else (sa.func.least, sa.func.greatest)
    )
    return (
        sa.update(_JOBS)
        .where(_JOBS.c.id == _param("j_job_id", _JOBS.c.id))
        .values(
            completed_steps=_JOBS.c.completed_steps + 1,
            progress=least(
                100, (_JOBS.c.completed_steps + 1) * 100 / greatest(_JOBS.c.total_steps, 1)
            ),
            updated_at=_param("j_now", _JOBS.c.updated_at),
        )
    )


def _phase_tokens() -> dict[str, Any]:
    return {
        c: _PHASES.c[c] + _param(f"p_{c}", _PHASES.c[c])
        for c in ("prompt_tokens", "completion_tokens", "cost")
    }


@functools.cache
def _add_to_phase_statement() -> sa.Update:
    return (
        sa.update(_PHASES)
        .where(_PHASES.c.id == _param("p_phase_id", _PHASES.c.id))
        .values(**_phase_tokens())
    )


@functools.cache
def _complete_phase_statement() -> sa.Update:
    """A one-step phase: its tokens added and the phase completed, if it is running."""
    return (
        sa.update(_PHASES)
        .where(
            _PHASES.c.id == _param("p_phase_id", _PHASES.c.id),
            _PHASES.c.status == StepStatus.RUNNING.value,
        )
        .values(**_phase_close_values())
        .returning(_PHASES.c.prompt_tokens, _PHASES.c.completion_tokens)
    )


def _phase_close_values() -> dict[str, Any]:
    return {
        **_phase_tokens(),
        "status": StepStatus.COMPLETED.value,
        "output": _param("p_output", _PHASES.c.output),
        "completed_at": _param("p_now", _PHASES.c.completed_at),
        "execution_time_ms": _param("p_elapsed_ms", _PHASES.c.execution_time_ms),
    }


def _already_written(session: Session, step_id: uuid.UUID, call_key: str | None) -> Outcome | None:
    """A retried write finds the work of a run whose commit landed but whose answer a
    database outage cut: nothing is written twice."""
    status = session.scalar(sa.select(JobStep.status).where(JobStep.id == step_id))
    if status == StepStatus.COMPLETED.value:
        return Outcome.CONTINUE
    if call_key is not None and session.scalar(
        sa.select(UsageRecord.id).where(UsageRecord.call_key == call_key)
    ):
        return Outcome.STOP
    return None


def settle(session: Session, ctx: StepContext, call_key: str, cost: Decimal) -> None:
    """Last in the step's transaction: the budget window rows are shared and hot."""
    windows = budget.settle(
        session, call_key=call_key, actual=cost, scope=budget.CallScope.of(ctx.job)
    )
    for alert in budget.raise_alerts(session, windows):
        append_event(session, job_id=ctx.job.id, type="budget_alert", data=alert.data)


def fail_step(
    sessions: sessionmaker[Session],
    ctx: StepContext,
    error: str,
    *,
    calls: StepCalls | None = None,
    error_detail: ProviderError | None = None,
    reached_limit_id: str | None = None,
) -> Outcome:
    def write(_: bool) -> None:
        kept = calls.keeping_progress() if calls is not None else nullcontext()
        with kept, transaction(sessions) as session:
            if calls is not None:
                if calls.held:  # an attempt that raised something other than a provider error
                    budget.release(session, call_key=calls.held)
                calls.write_progress(session)
            fail_in(
                session, ctx, error, calls=calls, error_detail=error_detail,
                reached_limit_id=reached_limit_id,
            )  # fmt: skip

    through_outage(
        "recording a step's failure",
        write,
        deadline=ctx.deadline or time.monotonic() + get_settings().db_retry_seconds,
    )
    return Outcome.FAILED


def fail_in(
    session: Session,
    ctx: StepContext,
    error: str,
    *,
    calls: StepCalls | None = None,
    error_detail: ProviderError | None = None,
    reached_limit_id: str | None = None,
) -> None:
    """The step, its phase and its job fail, in the caller's transaction."""
    now = utcnow()
    prompt, completion, cost = calls.charged_totals() if calls else (0, 0, Decimal(0))
    if not set_step_status(
        session,
        step_id=ctx.step.id,
        to=StepStatus.FAILED,
        from_=[StepStatus.RUNNING],
        error=error,
        completed_at=now,
        # What failed attempts still cost (cut streams) stays on the step's record.
        prompt_tokens=prompt,
        completion_tokens=completion,
        cost=cost,
    ):
        return  # cancelled meanwhile, or failed by a run whose commit answer was cut
    if cost:
        session.execute(
            sa.update(JobPhase)
            .where(JobPhase.id == ctx.phase.id)
            .values(
                prompt_tokens=JobPhase.prompt_tokens + prompt,
                completion_tokens=JobPhase.completion_tokens + completion,
                cost=JobPhase.cost + cost,
            )
            .execution_options(synchronize_session=False)
        )
    set_phase_status(
        session,
        phase_id=ctx.phase.id,
        to=StepStatus.FAILED,
        from_=[StepStatus.PENDING, StepStatus.RUNNING],
        completed_at=now,
    )
    append_event(
        session,
        job_id=ctx.job.id,
        type="step.failed",
        data={
            "phase": ctx.phase.name,
            "step": ctx.step.name,
            "error": error,
            "attempts": error_detail.attempts if error_detail else [],
            "providers_tried": error_detail.providers_tried if error_detail else [],
        },
    )
    transition_job(
        session,
        job_id=ctx.job.id,
        to=JobStatus.FAILED,
        error=f"Step '{ctx.step.name}' of phase '{ctx.phase.name}' failed: {error}",
        event_data={"error": error, "phase": ctx.phase.name, "step": ctx.step.name},
    )
    if chat.is_chat(ctx):  # the reply keeps what was generated; the conversation goes on
        chat.reply_failed(
            session, ctx, error=error, prompt_tokens=prompt, completion_tokens=completion,
            cost=cost,
        )  # fmt: skip
    if reached_limit_id:  # last: it may update the limit's hot window row
        limit_reached(session, ctx, reached_limit_id)
