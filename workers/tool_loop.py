"""The OpenAI tool-call loop of a step whose agent lists tools.

Each model turn is one ``complete`` call through the step's ``StepCalls`` hooks, so it
reserves budget before every attempt and is refused (BudgetExceeded) before a turn the
budget cannot cover. A turn that asks for tools is settled at once, in one transaction
with its ledger row and its ``tool.call``/``tool.result`` events; the final turn is
settled by the engine with the step's output, as any answer. Bounds (settings): model
turns per step (past it the step fails, every turn charged), tool calls per step (later
calls are refused to the model), seconds per tool call, and the step's soft time limit.
"""

from __future__ import annotations

import dataclasses
import time
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from baton.settings import get_settings
from models.db import transaction
from orchestration.breaker import shared_breaker
from orchestration.state import append_event
from orchestration.tools import specs_for
from workers import ledger
from workers.providers import Charge, CompletionRequest, CompletionResult, ProviderError, complete
from workers.tools import ToolContext, ToolOutcome, run_tool

if TYPE_CHECKING:
    from workers.engine import StepCalls

EVENT_ARGUMENT_CHARS = 2000
EVENT_RESULT_CHARS = 2000


def agent_tools(agent: Any) -> list[str]:
    """The tool names a step's agent lists (none: the step makes one plain call)."""
    config = (agent.config or {}) if agent is not None else {}
    return [t for t in config.get("tools") or [] if isinstance(t, str)]


@dataclasses.dataclass
class LoopResult:
    result: CompletionResult
    tools_used: list[str]


def run_tool_loop(calls: StepCalls, request: CompletionRequest, tools: list[str]) -> LoopResult:
    settings = get_settings()
    first = calls.ctx
    offered = specs_for(tools)
    allowed = frozenset(tools)
    messages = list(request.messages)
    tools_used: list[str] = []
    tool_calls_run = 0
    deadline = time.monotonic() + max(settings.step_soft_time_limit - 5, 1)
    context = ToolContext(
        sessions=calls.sessions,
        organization_id=first.job.organization_id,
        job_id=first.job.id,
        timeout_seconds=settings.tool_timeout_seconds,
    )
    for turn in range(1, settings.tool_max_turns + 1):
        remaining = deadline - time.monotonic()
        if remaining < 1:
            raise ProviderError(
                "tool_loop_timeout",
                f"the tool loop ran out of time after {turn - 1} model turns",
                model=request.model,
            )
        turn_request = dataclasses.replace(
            request, messages=list(messages), tools=offered, stream=False,
            total_timeout_seconds=min(remaining, request.total_timeout_seconds or remaining),
        )  # fmt: skip
        calls.begin_turn(turn, turn_request)
        result = complete(
            turn_request, context=first.providers, breaker=shared_breaker(), hooks=calls
        )
        if not result.tool_calls:
            return LoopResult(result, tools_used)
        last_turn = turn == settings.tool_max_turns
        outcomes: list[ToolOutcome] = []
        for call in result.tool_calls:
            if last_turn:
                outcomes.append(ToolOutcome(False, "error: not run, the turn limit is reached", 0))
            elif tool_calls_run >= settings.tool_max_calls:
                outcomes.append(
                    ToolOutcome(
                        False,
                        f"error: not run, the step's limit of {settings.tool_max_calls} tool "
                        "calls is reached; answer with what you have",
                        0,
                    )
                )
            else:
                tool_calls_run += 1
                outcome = run_tool(
                    call["name"], call["arguments"], context, allowed=allowed,
                    max_chars=settings.tool_result_chars,
                )  # fmt: skip
                if call["name"] in allowed and call["name"] not in tools_used:
                    tools_used.append(call["name"])
                outcomes.append(outcome)
        _settle_turn(calls, turn, result, outcomes)
        messages.append(
            {
                "role": "assistant",
                "content": result.text or None,
                "tool_calls": [
                    {
                        "id": c["id"],
                        "type": "function",
                        "function": {"name": c["name"], "arguments": c["arguments"]},
                    }
                    for c in result.tool_calls
                ],
            }
        )
        messages += [
            {"role": "tool", "tool_call_id": c["id"], "content": o.content}
            for c, o in zip(result.tool_calls, outcomes, strict=True)
        ]
    raise ProviderError(
        "tool_loop_limit",
        f"the model still asked for tools after {settings.tool_max_turns} turns "
        "(BATON_TOOL_MAX_TURNS); every turn was charged",
        model=request.model,
    )


def _settle_turn(
    calls: StepCalls, turn: int, result: CompletionResult, outcomes: list[ToolOutcome]
) -> None:
    """A turn that asked for tools: its ledger row, settlement and events, together."""
    ctx = calls.ctx
    key = ctx.call_key(result.attempt_number)
    where = {"phase": ctx.phase.name, "step": ctx.step.name, "turn": turn}
    with transaction(calls.sessions) as session:
        usage = ledger.usage_params(
            job=ctx.job, step=ctx.step, call_key=key, provider=result.provider,
            model=result.model, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, cost=result.cost,
        )  # fmt: skip
        ledger.record_usage(session, usage=usage)
        if calls.answered is not None:
            append_event(
                session, job_id=ctx.job.id, type="provider.attempt",
                data={**where, **calls.answered[1]},
            )  # fmt: skip
        for call, outcome in zip(result.tool_calls, outcomes, strict=True):
            append_event(
                session, job_id=ctx.job.id, type="tool.call",
                data={
                    **where, "call_id": call["id"], "tool": call["name"],
                    "arguments": call["arguments"][:EVENT_ARGUMENT_CHARS],
                },
            )  # fmt: skip
            append_event(
                session, job_id=ctx.job.id, type="tool.result",
                data={
                    **where, "call_id": call["id"], "tool": call["name"], "ok": outcome.ok,
                    "result": outcome.content[:EVENT_RESULT_CHARS],
                    "elapsed_ms": outcome.elapsed_ms,
                },
            )  # fmt: skip
        calls.settle(session, key, result.cost)
    calls.turn_settled(Charge(result.prompt_tokens, result.completion_tokens, Decimal(result.cost)))
