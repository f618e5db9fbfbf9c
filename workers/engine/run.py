"""One step from claim to completion: the logic behind the ``run_step`` task."""

from __future__ import annotations

import json
import logging
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import JobStatus
from orchestration import budget
from orchestration.breaker import shared_breaker
from orchestration.errors import BudgetExceeded, DomainError
from orchestration.results import analysis_summary
from workers import chat, external, tool_loop
from workers.engine.claim import claim
from workers.engine.completion import complete_step, fail_step
from workers.engine.core import (
    DB_UNAVAILABLE,
    FirstHold,
    Outcome,
    StepContext,
    StepStopped,
    through_outage,
)
from workers.engine.prompt import build_request
from workers.engine.provider_hooks import StepCalls, pause_for_budget
from workers.providers import (
    ProviderError,
    complete,
)
from workers.providers.estimate import worst_case_cost

log = logging.getLogger(__name__)


def run_step(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None = None,
    starts_job: bool = False,
) -> Outcome:
    """``take_over_from``: the worker id whose delivery of this step was cut by a database
    outage (the task retries): its claim may be taken over at once. ``starts_job``: the
    job may still be queued (the chain's first link), so the claim starts it first."""
    started = time.monotonic()
    settings = get_settings()
    deadline = started + max(settings.step_soft_time_limit - 1, 1)
    try:
        claimed = through_outage(
            "claiming a step",
            lambda _: claim(
                sessions, job_id=job_id, step_id=step_id, take_over_from=take_over_from,
                hold=hold_first_attempt, starts_job=starts_job,
            ),
            deadline=min(deadline, started + settings.db_retry_seconds),
        )  # fmt: skip
    except (BudgetExceeded, budget.BudgetPaused):
        # The first hold did not fit and the claim rolled back with it: claimed again
        # without it, the first attempt meets the refusal where it always did.
        claimed = through_outage(
            "claiming a step",
            lambda _: claim(
                sessions,
                job_id=job_id,
                step_id=step_id,
                take_over_from=take_over_from,
                starts_job=starts_job,
            ),
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
            first = claimed.first_hold
            request = first.request if first is not None else build_request(claimed)
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
        return fail_step(
            sessions, claimed, f"BUDGET_EXCEEDED: {exc.message}", calls=calls,
            reached_limit_id=exc.details[0]["limit_id"],
        )  # fmt: skip
    except budget.BudgetPaused as exc:
        refusal = exc  # ``exc`` is unbound once the handler ends
        through_outage(
            "pausing a job",
            lambda _: pause_for_budget(sessions, claimed, refusal),
            deadline=deadline,
        )
        return Outcome.STOP
    except ProviderError as exc:
        return fail_step(
            sessions, claimed, f"{exc.code}: {exc.message}", calls=calls, error_detail=exc
        )
    except DB_UNAVAILABLE:
        raise  # past its deadline: the task retries the step, taking over its own claim
    except Exception as exc:  # a step that raises fails its job; the worker keeps running
        log.exception("step %s of job %s raised", step_id, job_id)
        return fail_step(sessions, claimed, f"{type(exc).__name__}: {exc}", calls=calls)
    elapsed_ms = int((time.monotonic() - started) * 1000)
    # The answer is paid for: written once the database answers, however long that takes
    # within the step's time limit (never thrown away and bought again).
    return through_outage(
        "writing a step's answer",
        lambda again: complete_step(
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


def hold_first_attempt(session: Session, ctx: StepContext) -> FirstHold | None:
    """Last in the claim's transaction (the budget's window rows are the hottest): the
    first attempt's hold, so a step makes no transaction of its own before its call.

    Only for a plain step (no conversation history to read first, no tool loop, no task
    server, not a score) that nothing would stop: the job still running as of the row lock
    the claim's events took (a cancel now waits for this commit), the organization is not under emergency pause and the job's creator is
    active (otherwise ``StepCalls.before_attempt`` stops it, as for every attempt). The
    hold is the one ``before_attempt`` would make for attempt 1 on the request's first
    model; if attempt 1 is on another (a provider skipped), it is released there.
    """
    if (
        ctx.job.status != JobStatus.RUNNING.value
        or ctx.step.spec.get("kind") == "score"
        or ctx.providers is None
        or external.is_external(ctx.agent)
        or chat.is_chat(ctx)
        or tool_loop.agent_tools(ctx.agent)
        or (ctx.organization is not None and ctx.organization.emergency_paused_at is not None)
        or not ctx.creator_active
    ):
        return None
    request = build_request(ctx)
    catalog = ctx.providers.catalog
    try:
        resolved = catalog.resolve(request.model or catalog.default_model(), request.providers)
    except DomainError:
        return None  # the call fails with its own error, holding nothing
    amount = worst_case_cost(
        model=resolved, providers=request.providers, messages=request.messages,
        max_tokens=request.max_tokens, catalog=catalog,
    )  # fmt: skip
    key = ctx.call_key(1)
    budget.reserve(
        session,
        scope=budget.CallScope.of(ctx.job),
        call_key=key,
        amount=amount,
        job_id=ctx.job.id,
        hold_seconds=get_settings().step_time_limit + 60,
        any_limit=ctx.budget_limited,  # read by the claim's statement, in this transaction
    )
    return FirstHold(call_key=key, amount=amount, request=request)
