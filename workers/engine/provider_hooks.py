"""StepCalls: the step engine's side of every provider attempt (the provider layer's hooks).

Around every provider attempt: the worst case
of that attempt's model is reserved before it (a fallback to a pricier model reserves
its own price); a failed attempt is written as a ``provider.attempt`` event at once, in a
short transaction of its own, with its hold released, or, for a stream cut midway, its
partial cost in the ledger; a streamed answer's text goes out on the job's live channel
chunk by chunk and into ``step.progress`` events every few hundred characters.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    Agent,
    Job,
    JobStatus,
    Organization,
    StepStatus,
    UsageRecord,
    User,
)
from models.db import transaction
from orchestration import budget, live
from orchestration.state import (
    append_event,
    cancel_open_steps,
    set_step_status,
    transition_job,
)
from workers import chat, ledger
from workers.engine.completion import limit_reached, settle
from workers.engine.core import DB_UNAVAILABLE, StepContext, StepStopped, through_outage
from workers.providers import (
    Attempt,
    CallHooks,
    Charge,
    CompletionRequest,
)
from workers.providers.estimate import worst_case_cost

log = logging.getLogger(__name__)


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
        # The first attempt's hold made with the claim (ctx.first_hold): used as it is
        # if attempt 1 is on the model it was priced for, released otherwise.
        self.first_hold = ctx.first_hold
        if self.first_hold is not None:
            self.held = self.first_hold.call_key

    def _where(self) -> dict[str, Any]:
        return {"phase": self.ctx.phase.name, "step": self.ctx.step.name}

    # -- the tool loop's turns (workers/tool_loop.py) ------------------------------------

    def begin_turn(self, turn: int, request: CompletionRequest) -> None:
        """The next model turn: its own call keys (holds, ledger rows) and prompt."""
        self.ctx = replace(self.ctx, turn=turn)
        self.request = request
        self.answered = None

    def settle(self, session: Session, call_key: str, cost: Decimal) -> None:
        settle(session, self.ctx, call_key, cost)

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
        first, self.first_hold = self.first_hold, None
        if first is not None and (first.call_key, first.amount) == (key, amount):
            self.held = key  # held in the claim's transaction, which checked the job too
            self.progress = _Progress(attempt=attempt)
            return
        release = first.call_key if first is not None else None
        stopped = through_outage(
            "reserving budget",
            lambda again: self._reserve_or_stop(key, amount, again, release=release),
            deadline=ctx.deadline or time.monotonic() + self.settings.db_retry_seconds,
        )
        if stopped:
            raise StepStopped()
        self.held = key
        self.progress = _Progress(attempt=attempt)  # a new attempt streams from offset 0

    def _reserve_or_stop(
        self, key: str, amount: Decimal, again: bool, *, release: str | None = None
    ) -> bool:
        ctx = self.ctx
        with transaction(self.sessions) as session:
            if release is not None:  # the claim's hold, priced for another model
                budget.release(session, call_key=release)
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
                hand_back(session, ctx)
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
        if event := self._progress_event():
            append_event(session, job_id=self.ctx.job.id, type=event[0], data=event[1])

    def answer_events(self) -> list[tuple[str, dict[str, Any]]]:
        """For the answer's transaction: the streamed text not yet in the history, then
        the answered attempt (written with the step's other events in one statement)."""
        events = [event] if (event := self._progress_event()) else []
        if self.answered is not None:
            events.append(("provider.attempt", {**self._where(), **self.answered[1]}))
        return events

    def _progress_event(self) -> tuple[str, dict[str, Any]] | None:
        progress = self.progress
        if not progress.pending or progress.attempt is None:
            return None
        delta = "".join(progress.pending)
        event = {
            **self._where(), "attempt": progress.attempt.number,
            "provider": progress.attempt.provider, "model": progress.attempt.model,
            "offset": progress.written_chars, "delta": delta,
            "output_chars": progress.written_chars + len(delta),
        }  # fmt: skip
        progress.written_chars += len(delta)
        progress.pending = []
        progress.flushed_at = time.monotonic()
        return ("step.progress", event)

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
                usage = ledger.usage_params(
                    job=self.ctx.job, step=self.ctx.step, call_key=key,
                    provider=attempt.provider, model=attempt.model,
                    prompt_tokens=charge.prompt_tokens,
                    completion_tokens=charge.completion_tokens, cost=charge.cost,
                )  # fmt: skip
                ledger.record_usage(session, usage=usage)
                settle(session, self.ctx, key, charge.cost)

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


def hand_back(session: Session, ctx: StepContext) -> None:
    """Return a claimed step to pending, so a resumed job runs it from the start."""
    set_step_status(
        session,
        step_id=ctx.step.id,
        to=StepStatus.PENDING,
        from_=[StepStatus.RUNNING],
        lease_expires_at=None,
    )


def pause_for_budget(
    sessions: sessionmaker[Session], ctx: StepContext, refusal: budget.BudgetPaused
) -> None:
    with transaction(sessions) as session:
        hand_back(session, ctx)
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
        limit_reached(session, ctx, refusal.limit_id)
        if paused and ctx.job.agent_id:
            session.execute(
                sa.update(Agent)
                .where(Agent.id == ctx.job.agent_id)
                .values(status="paused")
                .execution_options(synchronize_session=False)
            )
