"""One step from claim to completion: the logic behind the ``run_step`` task."""

from __future__ import annotations

import json
import logging
import time
import uuid

from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from orchestration import budget
from orchestration.breaker import shared_breaker
from orchestration.errors import BudgetExceeded
from orchestration.results import analysis_summary
from workers import chat, external, tool_loop
from workers.engine.claim import claim
from workers.engine.completion import complete_step, fail_step
from workers.engine.core import DB_UNAVAILABLE, Outcome, StepContext, StepStopped, through_outage
from workers.engine.prompt import build_request
from workers.engine.provider_hooks import StepCalls, pause_for_budget
from workers.providers import (
    ProviderError,
    complete,
)

log = logging.getLogger(__name__)


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
        lambda _: claim(sessions, job_id=job_id, step_id=step_id, take_over_from=take_over_from),
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
            request = build_request(claimed)
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
