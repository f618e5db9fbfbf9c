"""Built-in tools and sim's tool emulation, in process (no workers needed)."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from orchestration.search import search_outputs
from orchestration.tools import specs_for
from tests import factories
from tests.helpers import ask
from workers import tools
from workers.providers import complete
from workers.tools import ToolContext, run_tool
from workers.tools.calculator import evaluate


@pytest.mark.parametrize(
    ("expression", "value"),
    [("2500000 * 1.18", 2950000.0), ("(3+4)*2", 14), ("10/2", 5), ("7/2", 3.5),
     ("2^10", 1024), ("-3**2", -9), ("17 // 5 + 17 % 5", 5)],
)  # fmt: skip
def test_calculator_evaluates_arithmetic(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("1/0", "division by zero"),
        ("9**9**9", "exponents are limited"),
        ("1000**999", "too large"),
        ("__import__('os').system('true')", "not arithmetic"),
        ("(1).__class__", "not arithmetic"),
        ("x + 1", "not arithmetic"),
        ("1 +", "not an arithmetic expression"),
        ("1+" * 300 + "1", "longer than"),
        ("(-8) ** 0.5", "not a real number"),
        ("1e308 * 10", "not a finite number"),
    ],
)
def test_calculator_refuses_what_is_not_bounded_arithmetic(expression, message):
    with pytest.raises(tools.ToolError, match=message):
        evaluate(expression)


def _context(sessions, org_id=None, timeout=2.0) -> ToolContext:
    return ToolContext(sessions, org_id or uuid.uuid4(), uuid.uuid4(), timeout)


def test_run_tool_reports_errors_and_timeouts_as_results(sessions, monkeypatch):
    ctx = _context(sessions, timeout=0.2)
    allowed = {"calculator", "search", "slow"}
    ok = run_tool("calculator", '{"expression": "6*7"}', ctx, allowed=allowed, max_chars=100)
    assert ok.ok and ok.content == "42"
    bad_json = run_tool("calculator", "{nope", ctx, allowed=allowed, max_chars=100)
    assert not bad_json.ok and "not valid JSON" in bad_json.content
    unknown = run_tool("shell", "{}", ctx, allowed=allowed, max_chars=100)
    assert not unknown.ok and "no tool named 'shell'" in unknown.content
    not_offered = run_tool("search", '{"query": "x"}', ctx, allowed={"calculator"}, max_chars=100)
    assert not not_offered.ok
    # A tool past its time bound: the step is told, and does not wait for it.
    monkeypatch.setitem(tools.TOOLS, "slow", lambda arguments, context: time.sleep(5) or "late")
    started = time.monotonic()
    slow = run_tool("slow", "{}", ctx, allowed=allowed, max_chars=100)
    assert not slow.ok and "did not finish within 0.2 s" in slow.content
    assert time.monotonic() - started < 2


def test_search_is_ranked_and_scoped_to_the_organization(db, sessions):
    mine, theirs = factories.organization(db), factories.organization(db)
    word = f"quokka{uuid.uuid4().hex[:6]}"
    for org, text in [
        (mine, f"{word} sales rose in the west; {word} {word} again"),
        (mine, f"one mention of {word} only"),
        (theirs, f"{word} secret figures of another tenant"),
    ]:
        job = factories.job(db, org)
        factories.step(db, job, output=text, status="completed")
    db.flush()
    hits = search_outputs(db, organization_id=mine.id, query=word, limit=5)
    assert len(hits) == 2 and all("another tenant" not in h.snippet for h in hits)
    assert hits[0].rank > hits[1].rank and hits[0].snippet.startswith(word)
    assert search_outputs(db, organization_id=mine.id, query='"no such phrase"') == []


def test_sim_calls_tools_in_openai_shape_then_answers_from_results():
    offered = specs_for(["calculator", "search"])
    first = complete(ask("sim/echo", "What is 12 * 3.5 today?", tools=offered))
    assert first.text == "" and first.tool_calls[0]["name"] == "calculator"
    assert json.loads(first.tool_calls[0]["arguments"]) == {"expression": "12 * 3.5"}
    search = complete(ask("sim/echo", "search: quarterly revenue", tools=offered))
    assert search.tool_calls[0]["name"] == "search"
    assert json.loads(search.tool_calls[0]["arguments"]) == {"query": "quarterly revenue"}
    plain = complete(ask("sim/echo", "Say hello", tools=offered))
    assert plain.tool_calls == [] and "Say hello" in plain.text
    call = first.tool_calls[0]
    messages = ask("sim/echo", "What is 12 * 3.5 today?").messages + [
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": call["id"], "type": "function",
             "function": {"name": "calculator", "arguments": call["arguments"]}}]},
        {"role": "tool", "tool_call_id": call["id"], "content": "42.0"},
    ]  # fmt: skip
    answer = complete(_with_messages(messages, offered))
    assert answer.tool_calls == [] and "calculator returned 42.0" in answer.text
    again = complete(_with_messages(messages, offered))
    assert again.text == answer.text  # deterministic


def _with_messages(messages, offered):
    request = ask("sim/echo", tools=offered)
    request.messages = messages
    return request


def test_tool_call_bound_refuses_later_calls_to_the_model(database_url, monkeypatch):
    """The engine in process (no Celery): BATON_TOOL_MAX_CALLS=1, a model that never stops."""
    import sqlalchemy as sa

    from baton.settings import reset_settings_cache
    from models import Job, JobEvent, UsageRecord
    from models.db import session_factory, transaction
    from workers import engine

    monkeypatch.setenv("BATON_TOOL_MAX_CALLS", "1")
    monkeypatch.setenv("BATON_TOOL_MAX_TURNS", "3")
    reset_settings_cache()
    sessions = session_factory(database_url)
    try:
        with transaction(sessions) as s:
            org = factories.organization(s)
            agent = factories.agent(
                s, org, config={"providers": ["sim"], "tools": ["calculator"], "max_retries": 0,
                                "model_config": {"model": "sim/tool-loop"}},
            )  # fmt: skip
            job = factories.job(s, org, status="running", kind="agent_run", agent_id=agent.id,
                                total_steps=1)  # fmt: skip
            step = factories.step(
                s, job, status="pending",
                spec={"kind": "llm", "task_type": "general", "instruction": "Keep going"},
            )  # fmt: skip
        assert engine.run_step(sessions, job_id=job.id, step_id=step.id) is engine.Outcome.FAILED
        with transaction(sessions) as s:
            results = [
                e.data for e in s.scalars(
                    sa.select(JobEvent).where(JobEvent.job_id == job.id, JobEvent.type == "tool.result")
                    .order_by(JobEvent.seq)
                )
            ]  # fmt: skip
            turns = s.scalar(sa.select(sa.func.count()).where(UsageRecord.job_id == job.id))
            failed = s.get(Job, job.id)
        assert [r["ok"] for r in results] == [True, False, False]
        assert "limit of 1 tool calls" in results[1]["result"]
        assert "turn limit" in results[2]["result"]
        assert turns == 3
        assert failed.status == "failed" and "after 3 turns" in failed.error
    finally:
        monkeypatch.delenv("BATON_TOOL_MAX_CALLS")
        monkeypatch.delenv("BATON_TOOL_MAX_TURNS")
        reset_settings_cache()
