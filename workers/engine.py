"""Running one step, joining a phase, finishing a job: the logic behind the thin tasks.

Each function owns its transactions. A step claims itself with a compare-and-set, calls
the provider outside any transaction, then commits output, usage and progress together,
but only if the job is still running (a cancel that landed meanwhile wins).

Around every provider attempt (``StepCalls``, the provider layer's hooks): the worst case
of that attempt's model is reserved before it (a fallback to a pricier model reserves
its own price); a failed attempt is written as a ``provider.attempt`` event at once, in a
short transaction of its own, with its hold released, or, for a stream cut midway, its
partial cost in the ledger; a streamed answer's text goes out on the job's live channel
chunk by chunk and into ``step.progress`` events every few hundred characters.
"""

from __future__ import annotations

import enum
import json
import logging
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    Agent,
    Job,
    JobKind,
    JobPhase,
    JobStatus,
    JobStep,
    Organization,
    StepStatus,
    UsageRecord,
    User,
    utcnow,
)
from models.db import transaction
from orchestration import budget, integrations, live, metrics
from orchestration.breaker import shared_breaker
from orchestration.errors import BudgetExceeded
from orchestration.jobs import resolve_step_model
from orchestration.model_catalog import ProviderContext
from orchestration.results import analysis_summary, build_result
from orchestration.state import (
    append_event,
    cancel_open_steps,
    set_phase_status,
    set_step_status,
    transition_job,
)
from workers import chat, external, ledger, tool_loop
from workers.providers import (
    Attempt,
    CallHooks,
    Charge,
    CompletionRequest,
    CompletionResult,
    ProviderError,
    complete,
)
from workers.providers.estimate import worst_case_cost

log = logging.getLogger(__name__)

PREVIOUS_OUTPUT_CHARS = 4000
DEFAULT_SYSTEM_PROMPTS = {
    JobKind.TASK: "You are a capable assistant completing a task for a user.",
    JobKind.BUILD: "You are a senior software engineer building a project step by step.",
    JobKind.ANALYSIS: "You are a meticulous code reviewer and security analyst.",
    JobKind.ORCHESTRATION: "You are one phase of a multi-phase AI orchestration. Build on the previous phases.",
}


WORKER_ID_HOST = socket.gethostname()


def worker_id() -> str:
    return f"{WORKER_ID_HOST}:{os.getpid()}"


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


class Outcome(enum.Enum):
    CONTINUE = "continue"  # the canvas goes on to the next task
    STOP = "stop"  # the job is not running (cancelled, failed, paused): the chain ends here
    FAILED = "failed"  # this step's own error failed the job: the chain ends here


# The database cannot be reached (or dropped the connection, or a deadlock rolled the
# transaction back): the transaction is re-run, never the provider call before it.
DB_UNAVAILABLE = (sa.exc.OperationalError, sa.exc.InterfaceError)
T = TypeVar("T")


def through_outage(what: str, write: Callable[[bool], T], *, deadline: float) -> T:
    """Run ``write(again)`` (one whole transaction) again until it commits or ``deadline``
    (``time.monotonic()``) would pass: a short database outage delays a write, never
    loses it. ``again`` is True on a re-run: a commit whose answer the outage cut may have
    landed, and the write must find its own work done (the first run skips that check)."""
    delay = 0.2
    again = False
    while True:
        try:
            return write(again)
        except DB_UNAVAILABLE as exc:
            again = True
            if time.monotonic() + delay >= deadline:
                raise
            log.warning("database unavailable while %s; again in %.1f s: %s", what, delay, exc)
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


@dataclass
class StepContext:
    job: Job
    step: JobStep
    phase: JobPhase
    attempt: int
    agent: Agent | None
    organization: Organization | None
    previous: list[tuple[str, str]]  # (phase name, output) of earlier phases
    siblings: list[JobStep]
    providers: ProviderContext | None = None
    # time.monotonic() by which the step's writes must be done (before its soft limit)
    deadline: float = 0.0
    turn: int = 0  # the model turn of a tool loop (workers/tool_loop.py); 0 without tools

    def call_key(self, number: int) -> str:
        """The ledger's and the reservation's key of the ``number``-th provider call of
        this delivery of the step: a redelivered step cannot write the same charge twice."""
        if self.turn:
            return f"{self.step.id}:{self.attempt}:t{self.turn}:{number}"
        return f"{self.step.id}:{self.attempt}:{number}"


class StepStopped(Exception):
    """The job stopped running (cancel, pause, emergency) before a provider call."""


def run_step(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None = None,
) -> Outcome:
    """``take_over_from``: the worker id whose delivery of this step was cut by a database
    outage (the task retries): its claim may be taken over at once."""
    started = time.monotonic()
    settings = get_settings()
    deadline = started + max(settings.step_soft_time_limit - 1, 1)
    claimed = through_outage(
        "claiming a step",
        lambda _: _claim(sessions, job_id=job_id, step_id=step_id, take_over_from=take_over_from),
        deadline=min(deadline, started + settings.db_retry_seconds),
    )
    if not isinstance(claimed, StepContext):
        return claimed
    claimed.deadline = deadline
    calls: StepCalls | None = None
    tools_used: list[str] | None = None
    try:
        if claimed.step.spec.get("kind") == "score":
            output, result = json.dumps(analysis_summary(claimed.siblings)), None
        elif external.is_external(claimed.agent):
            return external.run(sessions, claimed)  # submits, then PollLater (tasks.py)
        else:
            request = _request(claimed)
            if chat.is_chat(claimed):  # a conversation's reply: its history is the prompt
                request = chat.with_history(sessions, claimed, request)
            calls = StepCalls(sessions, claimed, request)
            if tools := tool_loop.agent_tools(claimed.agent):
                looped = tool_loop.run_tool_loop(calls, request, tools)
                result, tools_used = looped.result, looped.tools_used
            else:
                result = complete(
                    request, context=claimed.providers, breaker=shared_breaker(), hooks=calls
                )
            output = result.text
    except external.PollLater:
        raise
    except StepStopped:
        return Outcome.STOP
    except BudgetExceeded as exc:
        return _fail(
            sessions, claimed, f"BUDGET_EXCEEDED: {exc.message}", calls=calls,
            reached_limit_id=exc.details[0]["limit_id"],
        )  # fmt: skip
    except budget.BudgetPaused as exc:
        refusal = exc  # ``exc`` is unbound once the handler ends
        through_outage(
            "pausing a job",
            lambda _: _pause_for_budget(sessions, claimed, refusal),
            deadline=deadline,
        )
        return Outcome.STOP
    except ProviderError as exc:
        return _fail(sessions, claimed, f"{exc.code}: {exc.message}", calls=calls, error_detail=exc)
    except DB_UNAVAILABLE:
        raise  # past its deadline: the task retries the step, taking over its own claim
    except Exception as exc:  # a step that raises fails its job; the worker keeps running
        log.exception("step %s of job %s raised", step_id, job_id)
        return _fail(sessions, claimed, f"{type(exc).__name__}: {exc}", calls=calls)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    # The answer is paid for: written once the database answers, however long that takes
    # within the step's time limit (never thrown away and bought again).
    return through_outage(
        "writing a step's answer",
        lambda again: _complete(
            sessions,
            calls.ctx if calls else claimed,
            output=output,
            result=result,
            elapsed_ms=elapsed_ms,
            calls=calls,
            again=again,
            tools_used=tools_used,
        ),  # fmt: skip
        deadline=deadline,
    )


@dataclass
class _Progress:
    """Streamed text not yet written as a ``step.progress`` event."""

    attempt: Attempt | None = None
    pending: list[str] = field(default_factory=list)
    written_chars: int = 0  # of the current attempt, in earlier events
    chunks: int = 0
    flushed_at: float = field(default_factory=time.monotonic)

    @property
    def pending_chars(self) -> int:
        return sum(len(p) for p in self.pending)


class StepCalls(CallHooks):
    """The step engine's side of every provider attempt (see the module docstring)."""

    def __init__(
        self, sessions: sessionmaker[Session], ctx: StepContext, request: CompletionRequest
    ) -> None:
        self.sessions, self.ctx, self.request = sessions, ctx, request
        self.catalog = ctx.providers.catalog if ctx.providers else None
        self.settings = get_settings()
        self.held: str | None = None  # the call key whose hold is neither settled nor released
        self.charged: list[Charge] = []  # failed attempts that still cost (cut streams)
        self.answered: tuple[Attempt, dict[str, Any]] | None = None
        self.progress = _Progress()

    def _where(self) -> dict[str, Any]:
        return {"phase": self.ctx.phase.name, "step": self.ctx.step.name}

    # -- the tool loop's turns (workers/tool_loop.py) ------------------------------------

    def begin_turn(self, turn: int, request: CompletionRequest) -> None:
        """The next model turn: its own call keys (holds, ledger rows) and prompt."""
        self.ctx = replace(self.ctx, turn=turn)
        self.request = request
        self.answered = None

    def settle(self, session: Session, call_key: str, cost: Decimal) -> None:
        _settle(session, self.ctx, call_key, cost)

    def turn_settled(self, charge: Charge) -> None:
        """A finished turn's cost counts in the step's totals, like a cut stream's."""
        self.held = None
        self.charged.append(charge)

    # -- budget: one reservation per attempt, at that attempt's model's price ------------

    def before_attempt(self, attempt: Attempt) -> None:
        """Hold the attempt's worst-case cost on every applicable limit, or stop the step.

        Also the last check before money is spent: a job paused or cancelled since the
        claim, or an organization under emergency pause, makes no provider call.
        """
        ctx, request = self.ctx, self.request
        amount = worst_case_cost(
            model=attempt.resolved, providers=request.providers, messages=request.messages,
            max_tokens=request.max_tokens, catalog=self.catalog,
        )  # fmt: skip
        key = ctx.call_key(attempt.number)
        stopped = through_outage(
            "reserving budget",
            lambda again: self._reserve_or_stop(key, amount, again),
            deadline=ctx.deadline or time.monotonic() + self.settings.db_retry_seconds,
        )
        if stopped:
            raise StepStopped()
        self.held = key
        self.progress = _Progress(attempt=attempt)  # a new attempt streams from offset 0

    def _reserve_or_stop(self, key: str, amount: Decimal, again: bool) -> bool:
        ctx = self.ctx
        with transaction(self.sessions) as session:
            # One query: the emergency flag, the job's status, and whether the user who
            # submitted it is still active (a deactivated user spends nothing more).
            paused_at, status, creator_active = session.execute(
                sa.select(Organization.emergency_paused_at, Job.status, User.is_active)
                .select_from(Job)
                .join(Organization, Organization.id == Job.organization_id)
                .outerjoin(User, User.id == Job.created_by_id)
                .where(Job.id == ctx.job.id)
            ).one()
            creator_gone = creator_active is False
            stopped = paused_at is not None or status != JobStatus.RUNNING.value or creator_gone
            if stopped:
                _hand_back(session, ctx)
                if status == JobStatus.RUNNING.value and creator_gone:
                    transition_job(
                        session, job_id=ctx.job.id, to=JobStatus.CANCELLED,
                        error="the user who submitted the job was deactivated",
                        event_data={"reason": "user_deactivated"},
                    )  # fmt: skip
                    cancel_open_steps(session, job_id=ctx.job.id, reason="user deactivated")
                elif status == JobStatus.RUNNING.value:
                    transition_job(
                        session, job_id=ctx.job.id, to=JobStatus.PAUSED, paused_reason="emergency",
                        event_data={"reason": "emergency"},
                    )  # fmt: skip
            # On a re-run, a commit the outage cut may have made the holds already.
            elif not (again and budget.holds_of(session, call_key=key)):
                budget.reserve(
                    session,
                    scope=budget.CallScope.of(ctx.job),
                    call_key=key,
                    amount=amount,
                    job_id=ctx.job.id,
                    hold_seconds=self.settings.step_time_limit + 60,
                )
        return stopped

    # -- streaming ---------------------------------------------------------------------

    def on_delta(self, attempt: Attempt, text: str) -> None:
        progress = self.progress
        total = progress.written_chars + progress.pending_chars + len(text)
        live.publish(
            str(self.ctx.job.id),
            {
                "type": "step.delta", "job_id": str(self.ctx.job.id),
                "step_id": str(self.ctx.step.id), **self._where(), "attempt": attempt.number,
                "index": progress.chunks, "delta": text, "output_chars": total,
            },
        )  # fmt: skip
        if chat.is_chat(self.ctx):
            chat.on_token(self.ctx, attempt, text, progress.chunks)
        progress.chunks += 1
        progress.pending.append(text)
        if (
            progress.pending_chars >= self.settings.stream_event_chars
            or time.monotonic() - progress.flushed_at >= self.settings.stream_event_seconds
        ):
            try:
                with transaction(self.sessions) as session:
                    self.write_progress(session)
            except DB_UNAVAILABLE:
                # Kept pending: the next write (or the step's answer) carries it.
                log.warning("database unavailable; stream progress kept for the next write")
                progress.flushed_at = time.monotonic()

    @contextmanager
    def keeping_progress(self) -> Iterator[None]:
        """Around a whole transaction (its commit included): streamed text written in a
        transaction that then failed is written again by the next one."""
        progress = self.progress
        pending, written = list(progress.pending), progress.written_chars
        try:
            yield
        except BaseException:
            progress.pending, progress.written_chars = pending, written
            raise

    def write_progress(self, session: Session) -> None:
        """The streamed text not yet in the history, as one ``step.progress`` event."""
        progress = self.progress
        if not progress.pending or progress.attempt is None:
            return
        delta = "".join(progress.pending)
        append_event(
            session,
            job_id=self.ctx.job.id,
            type="step.progress",
            data={
                **self._where(), "attempt": progress.attempt.number,
                "provider": progress.attempt.provider, "model": progress.attempt.model,
                "offset": progress.written_chars, "delta": delta,
                "output_chars": progress.written_chars + len(delta),
            },
        )  # fmt: skip
        progress.written_chars += len(delta)
        progress.pending = []
        progress.flushed_at = time.monotonic()

    # -- after each attempt ------------------------------------------------------------

    def after_attempt(
        self, attempt: Attempt, record: dict[str, Any], charge: Charge | None
    ) -> None:
        if record["status"] == "ok":
            # Written with the step's output, usage and settlement, in one transaction.
            self.answered = (attempt, record)
            return
        key = self.ctx.call_key(attempt.number)
        through_outage(
            "recording a failed attempt",
            lambda again: self._record_failed_attempt(attempt, record, charge, key, again),
            deadline=self.ctx.deadline or time.monotonic() + self.settings.db_retry_seconds,
        )
        self.held = None
        if charge is not None:
            self.charged.append(charge)

    def _record_failed_attempt(
        self,
        attempt: Attempt,
        record: dict[str, Any],
        charge: Charge | None,
        key: str,
        again: bool,
    ) -> None:
        with self.keeping_progress(), transaction(self.sessions) as session:
            if again and session.scalar(
                sa.select(UsageRecord.id).where(UsageRecord.call_key == key)
            ):
                return  # written by a run whose commit answer the outage cut
            self.write_progress(session)
            append_event(
                session,
                job_id=self.ctx.job.id,
                type="provider.attempt",
                data={**self._where(), **record},
            )
            if charge is None:
                budget.release(session, call_key=key)
            else:
                # A cut stream: what it generated is spent, whatever happens to the step.
                ledger.record_usage(
                    session, job=self.ctx.job, step=self.ctx.step, call_key=key,
                    provider=attempt.provider, model=attempt.model,
                    prompt_tokens=charge.prompt_tokens,
                    completion_tokens=charge.completion_tokens, cost=charge.cost,
                )  # fmt: skip
                _settle(session, self.ctx, key, charge.cost)

    def on_skip(self, record: dict[str, Any]) -> None:
        with transaction(self.sessions) as session:
            append_event(
                session,
                job_id=self.ctx.job.id,
                type="provider.skipped",
                data={**self._where(), **record},
            )

    # -- totals ------------------------------------------------------------------------

    def charged_totals(self) -> tuple[int, int, Decimal]:
        return (
            sum(c.prompt_tokens for c in self.charged),
            sum(c.completion_tokens for c in self.charged),
            sum((c.cost for c in self.charged), Decimal(0)),
        )


def _hand_back(session: Session, ctx: StepContext) -> None:
    """Return a claimed step to pending, so a resumed job runs it from the start."""
    set_step_status(
        session,
        step_id=ctx.step.id,
        to=StepStatus.PENDING,
        from_=[StepStatus.RUNNING],
        lease_expires_at=None,
    )


def _pause_for_budget(
    sessions: sessionmaker[Session], ctx: StepContext, refusal: budget.BudgetPaused
) -> None:
    with transaction(sessions) as session:
        _hand_back(session, ctx)
        paused = transition_job(
            session,
            job_id=ctx.job.id,
            to=JobStatus.PAUSED,
            paused_reason="budget",
            event_data={
                "reason": "budget",
                "limit_id": refusal.limit_id,
                "limit_name": refusal.limit_name,
                "step": ctx.step.name,
            },
        )
        _limit_reached(session, ctx, refusal.limit_id)
        if paused and ctx.job.agent_id:
            session.execute(
                sa.update(Agent)
                .where(Agent.id == ctx.job.agent_id)
                .values(status="paused")
                .execution_options(synchronize_session=False)
            )


def _limit_reached(session: Session, ctx: StepContext, limit_id: str) -> None:
    alert = budget.limit_reached_alert(session, limit_id=limit_id)
    if alert is not None:
        append_event(session, job_id=ctx.job.id, type="budget_alert", data=alert.data)


def _claim(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None = None,
) -> StepContext | Outcome:
    with transaction(sessions) as session:
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
            transition_job(session, job_id=job.id, to=JobStatus.RUNNING)
            session.refresh(job)
        if job.status != JobStatus.RUNNING.value:
            return Outcome.STOP
        now = utcnow()
        settings = get_settings()
        lease = now + timedelta(seconds=settings.step_time_limit)
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
            _fail_in(
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
        claimed = session.execute(
            sa.update(JobStep)
            .where(JobStep.id == step.id, may_take_over)
            .values(
                status=StepStatus.RUNNING.value,
                attempts=JobStep.attempts + 1,
                started_at=now,
                lease_expires_at=lease,
                claimed_by=worker_id(),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:
            return Outcome.STOP  # another delivery of this message is running it right now
        session.refresh(step)
        phase = session.get(JobPhase, step.phase_id)
        if set_phase_status(
            session,
            phase_id=phase.id,
            to=StepStatus.RUNNING,
            from_=[StepStatus.PENDING],
            started_at=now,
        ):
            append_event(
                session,
                job_id=job.id,
                type="phase.started",
                data={"phase": phase.name, "code": phase.code},
            )
        append_event(
            session,
            job_id=job.id,
            type="step.started",
            data={
                "phase": phase.name,
                "step": step.name,
                "attempt": step.attempts,
                "worker": step.claimed_by,
            },
        )
        previous = [
            (p.name, p.output or "")
            for p in session.scalars(
                sa.select(JobPhase)
                .where(JobPhase.job_id == job.id, JobPhase.position < phase.position)
                .order_by(JobPhase.position)
            )
        ]
        siblings = []
        providers = None
        if step.spec.get("kind") == "score":
            siblings = list(session.scalars(sa.select(JobStep).where(JobStep.job_id == job.id)))
        else:
            providers = integrations.provider_context(session, organization_id=job.organization_id)
        return StepContext(
            job=job,
            step=step,
            phase=phase,
            attempt=step.attempts,
            agent=session.get(Agent, job.agent_id) if job.agent_id else None,
            organization=session.get(Organization, job.organization_id),
            previous=previous,
            siblings=siblings,
            providers=providers,
        )


def _request(ctx: StepContext) -> CompletionRequest:
    job, spec = ctx.job, ctx.step.spec
    config: dict[str, Any] = (ctx.agent.config if ctx.agent else None) or {}
    model_config: dict[str, Any] = config.get("model_config") or {}
    settings = job.settings or {}
    system = config.get("system_prompt") or DEFAULT_SYSTEM_PROMPTS.get(JobKind(job.kind), "")
    parts = [spec.get("instruction", "")]
    context = {k: v for k, v in (job.input or {}).items() if k not in {"title"} and v}
    if context:
        parts.append(
            "Job input:\n" + json.dumps(context, default=str, indent=1)[:PREVIOUS_OUTPUT_CHARS]
        )
    for name, output in ctx.previous:
        parts.append(f"Output of phase '{name}':\n{output[:PREVIOUS_OUTPUT_CHARS]}")
    model = resolve_step_model(
        job_settings=settings,
        agent=ctx.agent,
        organization=ctx.organization,
        task_type=spec.get("task_type", "general"),
        catalog=ctx.providers.catalog if ctx.providers else None,
    )
    temperature = settings.get("temperature", model_config.get("temperature"))
    stream = settings.get("stream")
    return CompletionRequest(
        model=model,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": "\n\n".join(parts)},
        ],
        max_tokens=int(
            settings.get("max_tokens")
            or model_config.get("max_tokens")
            or get_settings().default_max_tokens
        ),
        temperature=float(temperature) if temperature is not None else None,
        providers=list(config.get("providers") or []),
        max_retries=int(config.get("max_retries", 2)),
        timeout_seconds=float(config.get("timeout_seconds", 60)),
        fallback_models=dict(config.get("fallback_models") or {}),
        stream=bool(config.get("stream", False) if stream is None else stream),
        sim_fault=settings.get("sim_fault"),
        # Fallbacks included, the call ends before the step's soft time limit.
        total_timeout_seconds=max(get_settings().step_soft_time_limit - 5, 1),
    )


def _complete(
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
        if result is not None:
            # Money spent is in the ledger even if the job was cancelled meanwhile.
            ledger.record_usage(
                session, job=job, step=step, call_key=call_key, provider=result.provider,
                model=result.model, prompt_tokens=result.prompt_tokens,
                completion_tokens=result.completion_tokens, cost=result.cost,
            )  # fmt: skip
        if calls is not None:
            calls.write_progress(session)
            if calls.answered is not None:
                append_event(
                    session, job_id=job.id, type="provider.attempt",
                    data={"phase": ctx.phase.name, "step": step.name, **calls.answered[1]},
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
        # failed one does not.
        job_running = (
            sa.select(Job.id)
            .where(
                Job.id == job.id, Job.status.in_([JobStatus.RUNNING.value, JobStatus.PAUSED.value])
            )
            .exists()
        )
        done = session.execute(
            sa.update(JobStep)
            .where(JobStep.id == step.id, JobStep.status == StepStatus.RUNNING.value, job_running)
            .values(
                status=StepStatus.COMPLETED.value,
                output=output,
                completed_at=now,
                execution_time_ms=elapsed_ms,
                error=None,
                **usage,
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not done:
            # The job was cancelled (or failed) while the call was in flight: the answer
            # is kept on the cancelled step, its cost is in the ledger, and the history
            # says it came back after the stop.
            set_step_status(
                session, step_id=step.id, to=StepStatus.CANCELLED,
                from_=[StepStatus.RUNNING, StepStatus.CANCELLED],
                output=output, completed_at=now, execution_time_ms=elapsed_ms, **usage,
            )  # fmt: skip
            job_status = session.scalar(sa.select(Job.status).where(Job.id == job.id))
            append_event(
                session, job_id=job.id, type="step.returned_after_stop",
                data={
                    "phase": ctx.phase.name, "step": step.name, "job_status": job_status,
                    "provider": usage["provider"], "model": usage["model"],
                    "cost": str(usage["cost"]), "call_key": call_key,
                    "recorded_in_ledger": result is not None,
                },
            )  # fmt: skip
            if chat.is_chat(ctx):
                chat.reply_failed(
                    session, ctx, error=f"JOB_{str(job_status).upper()}: the reply's job stopped",
                    prompt_tokens=usage["prompt_tokens"],
                    completion_tokens=usage["completion_tokens"], cost=usage["cost"],
                )  # fmt: skip
            if result is not None:
                _settle(session, ctx, call_key, result.cost)
            return Outcome.STOP
        metrics.count_on_commit(session, metrics.STEPS, kind=job.kind, status="completed")
        session.execute(
            sa.update(JobPhase)
            .where(JobPhase.id == step.phase_id)
            .values(
                prompt_tokens=JobPhase.prompt_tokens + usage["prompt_tokens"],
                completion_tokens=JobPhase.completion_tokens + usage["completion_tokens"],
                cost=JobPhase.cost + usage["cost"],
            )
            .execution_options(synchronize_session=False)
        )
        session.execute(
            sa.update(Job)
            .where(Job.id == job.id)
            .values(
                completed_steps=Job.completed_steps + 1,
                progress=sa.func.least(
                    100, (Job.completed_steps + 1) * 100 / sa.func.greatest(Job.total_steps, 1)
                )
                if session.bind.dialect.name != "sqlite"
                else sa.func.min(
                    100, (Job.completed_steps + 1) * 100 / sa.func.max(Job.total_steps, 1)
                ),
                updated_at=now,
            )
            .execution_options(synchronize_session=False)
        )
        progress = session.scalar(sa.select(Job.progress).where(Job.id == job.id))
        event = {
            "phase": ctx.phase.name,
            "step": step.name,
            "progress": progress,
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
        append_event(session, job_id=job.id, type="step.completed", data=event)
        siblings = session.scalar(
            sa.select(sa.func.count()).where(JobStep.phase_id == step.phase_id)
        )
        if siblings == 1:
            _complete_phase(session, job_id=job.id, phase_id=step.phase_id)
        status = session.scalar(sa.select(Job.status).where(Job.id == job.id))
        if chat.is_chat(ctx):  # the reply message, and the conversation's next reply
            chat.reply_written(session, ctx, text=output, usage=usage)
        if result is not None:
            _settle(session, ctx, call_key, result.cost)
    # Paused meanwhile: the chain stops here and resume sends the rest.
    return Outcome.CONTINUE if status == JobStatus.RUNNING.value else Outcome.STOP


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


def _settle(session: Session, ctx: StepContext, call_key: str, cost: Decimal) -> None:
    """Last in the step's transaction: the budget window rows are shared and hot."""
    windows = budget.settle(
        session, call_key=call_key, actual=cost, scope=budget.CallScope.of(ctx.job)
    )
    for alert in budget.raise_alerts(session, windows):
        append_event(session, job_id=ctx.job.id, type="budget_alert", data=alert.data)


def _fail(
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
            _fail_in(
                session, ctx, error, calls=calls, error_detail=error_detail,
                reached_limit_id=reached_limit_id,
            )  # fmt: skip

    through_outage(
        "recording a step's failure",
        write,
        deadline=ctx.deadline or time.monotonic() + get_settings().db_retry_seconds,
    )
    return Outcome.FAILED


def _fail_in(
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
        _limit_reached(session, ctx, reached_limit_id)


def _complete_phase(session: Session, *, job_id: uuid.UUID, phase_id: uuid.UUID) -> bool:
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
    session.refresh(phase)
    append_event(
        session,
        job_id=job_id,
        type="phase.completed",
        data={
            "phase": phase.name,
            "code": phase.code,
            # The phase's output travels with its event: a stream prints it as it arrives.
            "output": output,
            "execution_time_ms": elapsed,
            "token_usage": {
                "prompt_tokens": phase.prompt_tokens,
                "completion_tokens": phase.completion_tokens,
                "total_tokens": phase.prompt_tokens + phase.completion_tokens,
            },
        },
    )
    return True


def join_phase(
    sessions: sessionmaker[Session], *, job_id: uuid.UUID, phase_id: uuid.UUID
) -> Outcome:
    """The chord body: every step of the phase has finished; close the phase."""
    with transaction(sessions) as session:
        if session.scalar(sa.select(Job.status).where(Job.id == job_id)) != JobStatus.RUNNING.value:
            return Outcome.STOP
        phase = session.get(JobPhase, phase_id)
        if phase is None:
            return Outcome.STOP
        if phase.status == StepStatus.COMPLETED.value or _complete_phase(
            session, job_id=job_id, phase_id=phase_id
        ):
            return Outcome.CONTINUE
        return Outcome.STOP


def finish_job(sessions: sessionmaker[Session], *, job_id: uuid.UUID) -> Outcome:
    with transaction(sessions) as session:
        job = session.get(Job, job_id)
        if job is None or job.status != JobStatus.RUNNING.value:
            return Outcome.STOP
        phases = list(session.scalars(sa.select(JobPhase).where(JobPhase.job_id == job_id)))
        steps = list(session.scalars(sa.select(JobStep).where(JobStep.job_id == job_id)))
        if any(p.status != StepStatus.COMPLETED.value for p in phases):
            return Outcome.STOP
        result = build_result(job, phases, steps)
        transition_job(
            session,
            job_id=job_id,
            to=JobStatus.COMPLETED,
            result=result,
            progress=100,
            event_data={"progress": 100},
        )
    return Outcome.CONTINUE


def fail_job(sessions: sessionmaker[Session], *, job_id: uuid.UUID, reason: str) -> None:
    """The canvas error callback: a task crashed outside the step's own error handling."""
    with transaction(sessions) as session:
        transition_job(
            session, job_id=job_id, to=JobStatus.FAILED, error=reason, event_data={"error": reason}
        )
