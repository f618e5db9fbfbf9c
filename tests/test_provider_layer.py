"""The provider layer over real TCP: retries, fallback, the breaker inside ``complete()``,
streaming (deltas in order, usage priced like the unstreamed call, cut streams charged),
sim faults, and organization keys. No database: these call ``workers.providers`` only."""

from __future__ import annotations

import json
import math
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from orchestration.breaker import RedisBreaker, Thresholds
from orchestration.model_catalog import (
    BUILTIN_PROVIDERS,
    Catalog,
    ProviderContext,
    ProviderSpec,
    ResolvedModel,
    cost_of,
)
from tests.fake_openai import SERVER_ERROR, USAGE, Stream, completion_body
from tests.helpers import ask
from workers.providers import (
    Attempt,
    CallHooks,
    Charge,
    ProviderError,
    complete,
)
from workers.providers import sim as sim_provider
from workers.providers.estimate import estimate_prompt_tokens

KEY = "sk-org-" + "a1b2c3d4" * 4


def org_context(*specs: ProviderSpec, keys: dict[str, str] | None = None) -> ProviderContext:
    """As the worker builds it for an organization with these integrations."""
    catalog = Catalog({**Catalog().specs, **{s.name: s for s in specs}})
    org = uuid.uuid4().hex
    scoped = frozenset([s.name for s in specs] + list(keys or {}))
    return ProviderContext(catalog, keys or {}, {}, scoped, org)


def server_spec(base_url: str, name: str = "local", timeout: float = 10) -> ProviderSpec:
    return ProviderSpec(name, base_url, None, ("gpt-4o-mini",), timeout_seconds=timeout, owner="o")


class Recorder(CallHooks):
    def __init__(self) -> None:
        self.events: list[tuple[str, Any]] = []

    def before_attempt(self, attempt: Attempt) -> None:
        self.events.append(("before", attempt.number, attempt.model))

    def on_delta(self, attempt: Attempt, text: str) -> None:
        self.events.append(("delta", attempt.number, text))

    def after_attempt(self, attempt: Attempt, record: dict, charge: Charge | None) -> None:
        self.events.append(("after", attempt.number, record, charge))

    def on_skip(self, record: dict) -> None:
        self.events.append(("skip", record))

    def of(self, kind: str) -> list[Any]:
        return [e for e in self.events if e[0] == kind]


# --- retries over TCP -------------------------------------------------------------------


def test_a_500_then_success_is_retried_over_tcp(fake_openai: Any) -> None:
    server = fake_openai([(500, {}, SERVER_ERROR), (200, {}, completion_body)])
    spec = server_spec(server.base_url)
    result = complete(ask("local/gpt-4o-mini", max_retries=2), context=org_context(spec))
    assert [a["status"] for a in result.attempts] == ["error", "ok"]
    assert result.attempts[0]["http_status"] == 500
    assert result.attempts[0]["error_code"] == "server_error"
    assert [a["attempt"] for a in result.attempts] == [1, 2]
    assert result.attempt_number == 2
    assert len(server.requests) == 2


def test_a_server_slower_than_the_timeout_is_a_retried_timeout(fake_openai: Any) -> None:
    server = fake_openai([(200, {}, completion_body, 1.5), (200, {}, completion_body)])
    spec = server_spec(server.base_url, timeout=0.4)
    started = time.monotonic()
    result = complete(ask("local/gpt-4o-mini", max_retries=1), context=org_context(spec))
    assert time.monotonic() - started < 1.4  # did not wait for the slow answer
    assert [a.get("error_code") for a in result.attempts] == ["timeout", None]
    assert result.text.endswith("Score: 7.5/10")


def test_no_retry_and_no_fallback_on_400(fake_openai: Any) -> None:
    body = {"error": {"message": "context length exceeded", "type": "invalid_request_error"}}
    server = fake_openai([(400, {}, body)])
    spec = server_spec(server.base_url)
    with pytest.raises(ProviderError) as caught:
        complete(
            ask("local/gpt-4o-mini", providers=["local", "sim"], max_retries=3),
            context=org_context(spec),
        )
    assert caught.value.code == "bad_request"
    assert caught.value.providers_tried == ["local"]  # a bad request would fail anywhere
    assert len(server.requests) == 1


# --- fallback ------------------------------------------------------------------------------


def test_spent_retries_fall_back_to_the_next_provider(fake_openai: Any) -> None:
    server = fake_openai([(500, {}, SERVER_ERROR)])
    spec = server_spec(server.base_url)
    hooks = Recorder()
    result = complete(
        ask("local/gpt-4o-mini", providers=["local", "sim"], max_retries=1),
        context=org_context(spec),
        hooks=hooks,
    )
    assert (result.provider, result.model) == ("sim", "sim/echo")  # sim's default model
    assert result.providers_tried == ["local", "sim"]
    assert [(a["provider"], a["status"]) for a in result.attempts] == [
        ("local", "error"),
        ("local", "error"),
        ("sim", "ok"),
    ]
    assert [e[1:3] for e in hooks.of("before")] == [
        (1, "local/gpt-4o-mini"),
        (2, "local/gpt-4o-mini"),
        (3, "sim/echo"),
    ]
    assert len(server.requests) == 2


def test_a_provider_without_a_key_is_skipped_for_the_next(monkeypatch: Any) -> None:
    hooks = Recorder()
    result = complete(ask("gpt-4o", providers=["openai", "sim"]), hooks=hooks)
    assert result.provider == "sim"
    assert [r["error_code"] for (_, r) in hooks.of("skip")] == ["missing_api_key"]
    assert result.skipped[0]["provider"] == "openai"
    assert result.providers_tried == ["openai", "sim"]


def test_every_provider_failing_says_so(fake_openai: Any) -> None:
    server = fake_openai([(503, {}, SERVER_ERROR)])
    spec = server_spec(server.base_url)
    with pytest.raises(ProviderError) as caught:
        complete(
            ask("local/gpt-4o-mini", providers=["local", "sim"], max_retries=0, sim_fault="error"),
            context=org_context(spec),
        )
    error = caught.value
    assert error.code == "server_error"
    assert "every provider failed" in error.message
    assert "local/gpt-4o-mini: server_error" in error.message
    assert error.providers_tried == ["local", "sim"]
    assert [a["provider"] for a in error.attempts] == ["local", "sim"]


def test_fallback_model_mapping() -> None:
    catalog = Catalog()
    gpt4o = ResolvedModel("openai", "gpt-4o")
    # seed 000: OpenAI -> Groq, a comparable model
    assert catalog.fallback_model(gpt4o, "groq", {}) == ResolvedModel(
        "groq", "llama-3.3-70b-versatile"
    )
    assert catalog.fallback_model(
        ResolvedModel("openai", "gpt-4o-mini"), "groq", {}
    ) == ResolvedModel("groq", "llama-3.1-8b-instant")
    # the agent's own mapping wins
    assert catalog.fallback_model(gpt4o, "groq", {"groq": "mixtral-8x7b"}) == ResolvedModel(
        "groq", "mixtral-8x7b"
    )
    # nothing comparable: the provider's default model
    assert catalog.fallback_model(gpt4o, "sim", {}) == ResolvedModel("sim", "echo")
    chain = catalog.candidates(gpt4o, ["groq", "openai", "sim"])
    assert [m.qualified for m in chain] == [
        "openai/gpt-4o",
        "groq/llama-3.3-70b-versatile",
        "sim/echo",
    ]


# --- the breaker inside complete() ----------------------------------------------------------


def test_the_breaker_opens_and_then_no_request_is_sent(fake_openai: Any) -> None:
    server = fake_openai([(500, {}, SERVER_ERROR)])
    spec = server_spec(server.base_url)
    context = org_context(spec)
    breaker = RedisBreaker(Thresholds(failures=3, window_seconds=60, cooldown_seconds=60))
    with pytest.raises(ProviderError):
        complete(ask("local/gpt-4o-mini", max_retries=2), context=context, breaker=breaker)
    assert len(server.requests) == 3

    hooks = Recorder()
    result = complete(
        ask("local/gpt-4o-mini", providers=["local", "sim"], max_retries=2),
        context=context,
        breaker=breaker,
        hooks=hooks,
    )
    assert len(server.requests) == 3  # open: the provider was not called again
    assert result.provider == "sim"
    skip = hooks.of("skip")[0][1]
    assert skip["error_code"] == "circuit_open" and skip["provider"] == "local"
    assert "server_error" in skip["message"]  # what opened it
    with pytest.raises(ProviderError) as caught:
        complete(ask("local/gpt-4o-mini"), context=context, breaker=breaker)
    assert caught.value.code == "circuit_open"


def test_a_400_does_not_count_against_the_provider(fake_openai: Any) -> None:
    body = {"error": {"message": "bad", "type": "invalid_request_error"}}
    server = fake_openai([(400, {}, body)])
    context = org_context(server_spec(server.base_url))
    breaker = RedisBreaker(Thresholds(failures=2, window_seconds=60, cooldown_seconds=60))
    for _ in range(4):
        with pytest.raises(ProviderError) as caught:
            complete(ask("local/gpt-4o-mini"), context=context, breaker=breaker)
        assert caught.value.code == "bad_request"
    assert len(server.requests) == 4


# --- streaming -----------------------------------------------------------------------------


def test_a_sim_stream_arrives_in_order_and_costs_what_the_unstreamed_call_costs() -> None:
    prompt = "Stream the quarterly summary, please."
    plain = complete(ask("sim/echo", prompt))
    hooks = Recorder()
    streamed = complete(ask("sim/echo", prompt, stream=True), hooks=hooks)
    deltas = [text for (_, _, text) in hooks.of("delta")]
    assert len(deltas) > 3
    assert "".join(deltas) == streamed.text == plain.text
    assert (streamed.prompt_tokens, streamed.completion_tokens) == (
        plain.prompt_tokens,
        plain.completion_tokens,
    )
    assert streamed.cost == plain.cost
    assert streamed.usage_estimated is False
    assert streamed.attempts[0]["stream"] is True


def test_a_stream_over_tcp_reports_usage_from_stream_options(fake_openai: Any) -> None:
    server = fake_openai([(200, {}, Stream(["Hel", "lo ", "there"], usage=USAGE))])
    hooks = Recorder()
    result = complete(
        ask("local/gpt-4o-mini", stream=True),
        context=org_context(server_spec(server.base_url)),
        hooks=hooks,
    )
    assert [t for (_, _, t) in hooks.of("delta")] == ["Hel", "lo ", "there"]
    assert result.text == "Hello there"
    assert (result.prompt_tokens, result.completion_tokens) == (21, 9)
    assert result.cost == cost_of(ResolvedModel("local", "gpt-4o-mini"), 21, 9)
    sent = server.requests[0]["body"]
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True}


def test_a_cut_stream_is_charged_for_its_partial_output_then_retried(fake_openai: Any) -> None:
    pieces = ["The first part of the answer, ", "then more of it, ", "and the end."]
    server = fake_openai(
        [
            (200, {}, Stream(pieces, usage=USAGE, cut_after=2)),
            (200, {}, Stream(pieces, usage=USAGE)),
        ]
    )
    request = ask("local/gpt-4o-mini", stream=True, max_retries=1)
    hooks = Recorder()
    result = complete(request, context=org_context(server_spec(server.base_url)), hooks=hooks)

    (first, second) = hooks.of("after")
    _, number, record, charge = first
    assert number == 1 and record["status"] == "error"
    assert record["error_code"] == "stream_cut"
    partial = "".join(pieces[:2])
    expected_prompt = estimate_prompt_tokens("local", request.messages)
    expected_completion = math.ceil(len(partial) / 3)
    assert charge is not None and charge.estimated
    assert (charge.prompt_tokens, charge.completion_tokens) == (
        expected_prompt,
        expected_completion,
    )
    resolved = ResolvedModel("local", "gpt-4o-mini")
    assert charge.cost == cost_of(resolved, expected_prompt, expected_completion) > 0
    assert record["charged"]["cost"] == str(charge.cost)
    assert second[2]["status"] == "ok" and result.text == "".join(pieces)
    assert (result.prompt_tokens, result.completion_tokens) == (21, 9)  # reported, exact


def test_a_stream_without_usage_is_counted_and_flagged(fake_openai: Any) -> None:
    server = fake_openai([(200, {}, Stream(["abc", "def"], usage=None))])
    request = ask("local/gpt-4o-mini", stream=True)
    result = complete(request, context=org_context(server_spec(server.base_url)))
    assert result.usage_estimated is True
    assert result.prompt_tokens == estimate_prompt_tokens("local", request.messages)
    assert result.completion_tokens == 2  # six characters at three a token


def test_sim_cut_stream_is_charged_and_sim_slow_stream_is_slow() -> None:
    hooks = Recorder()
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/cut-stream", stream=True, max_retries=0), hooks=hooks)
    assert caught.value.code == "stream_cut"
    _, _, record, charge = hooks.of("after")[0]
    streamed = "".join(t for (_, _, t) in hooks.of("delta"))
    assert len(streamed) > 0
    assert charge.completion_tokens == sim_provider.count_tokens(streamed)
    assert charge.cost > 0 and record["charged"]["estimated"] is True

    started = time.monotonic()
    slow = complete(ask("sim/slow-stream", stream=True))
    assert time.monotonic() - started > 0.5
    assert slow.finish_reason == "stop"


def test_sim_faults_by_setting_apply_to_any_sim_model() -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/echo", sim_fault="error", max_retries=0))
    assert caught.value.code == "server_error"
    flaky = complete(ask("sim/echo", sim_fault="flaky", max_retries=2))
    assert [a.get("http_status") for a in flaky.attempts] == [429, 429, None]
    assert flaky.model == "sim/echo"


# --- organization keys -----------------------------------------------------------------------


def test_an_organization_key_wins_over_the_environment(
    fake_openai: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from baton.settings import reset_settings_cache

    monkeypatch.setenv("OPENAI_API_KEY", "sk-env-" + "e" * 24)
    reset_settings_cache()
    try:
        server = fake_openai([(200, {}, completion_body)])
        openai_here = ProviderSpec(
            "openai", server.base_url, "OPENAI_API_KEY", BUILTIN_PROVIDERS["openai"].models
        )
        env_only = ProviderContext(Catalog({"openai": openai_here}))
        complete(ask("openai/gpt-4o-mini"), context=env_only)
        with_org_key = ProviderContext(
            Catalog({"openai": openai_here}), {"openai": KEY}, {}, frozenset({"openai"}), "org"
        )
        result = complete(ask("openai/gpt-4o-mini"), context=with_org_key)
    finally:
        monkeypatch.delenv("OPENAI_API_KEY")
        reset_settings_cache()
    auth = [r["headers"]["authorization"] for r in server.requests]
    assert auth == ["Bearer sk-env-" + "e" * 24, f"Bearer {KEY}"]
    assert KEY not in json.dumps(result.attempts) + repr(result)
    assert result.cost == cost_of(ResolvedModel("openai", "gpt-4o-mini"), 21, 9)


def test_an_unreadable_organization_key_is_a_clear_error_not_the_env_key() -> None:
    context = ProviderContext(
        Catalog(), {}, {"groq": "the organization's key for 'groq' is unreadable"}, frozenset()
    )
    with pytest.raises(ProviderError) as caught:
        complete(ask("groq/llama-3.1-70b"), context=context)
    assert caught.value.code == "missing_api_key"
    assert "unreadable" in caught.value.message


def test_configured_provider_prices_are_used(fake_openai: Any) -> None:
    server = fake_openai([(200, {}, completion_body)])
    price = {"input": Decimal("1"), "output": Decimal("2")}
    spec = ProviderSpec("vllm", server.base_url, None, ("qwen",), prices={"qwen": price})
    result = complete(ask("vllm/qwen"), context=org_context(spec))
    assert result.cost == (Decimal(21) * 1 + Decimal(9) * 2) / Decimal(1_000_000)


# --- configuration and routing ---------------------------------------------------------------


def test_operator_providers_come_from_baton_providers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any, fake_openai: Any
) -> None:
    from baton.settings import reset_settings_cache
    from orchestration import model_catalog

    server = fake_openai([(200, {}, completion_body)])
    config = tmp_path / "providers.json"
    config.write_text(
        json.dumps(
            [
                {
                    "name": "vllm",
                    "base_url": server.base_url,
                    "api_key_env": "VLLM_KEY",
                    "models": ["qwen-7b"],
                    "timeout_seconds": 5,
                    "prices": {"qwen-7b": {"input": "0.1", "output": "0.2"}},
                }
            ]
        )
    )
    monkeypatch.setenv("BATON_PROVIDERS", str(config))  # a file path, or the JSON itself
    monkeypatch.setenv("VLLM_KEY", KEY)
    reset_settings_cache()
    try:
        spec = model_catalog.providers()["vllm"]
        assert (spec.base_url, spec.key_env, spec.models) == (
            server.base_url,
            "VLLM_KEY",
            ("qwen-7b",),
        )
        assert model_catalog.resolve_model("qwen-7b") == ResolvedModel("vllm", "qwen-7b")
        result = complete(ask("qwen-7b"))
        assert result.provider == "vllm"
        assert server.requests[0]["headers"]["authorization"] == f"Bearer {KEY}"
        assert result.cost == (Decimal(21) * Decimal("0.1") + Decimal(9) * Decimal("0.2")) / 10**6
        from baton.settings import get_settings

        assert KEY not in repr(get_settings())
    finally:
        monkeypatch.undo()
        reset_settings_cache()


@pytest.mark.parametrize(
    ("raw", "problem"),
    [
        ('{"Bad Name": {"base_url": "http://x/v1", "models": ["m"]}}', "name"),
        ('{"p": {"base_url": "ftp://x", "models": ["m"]}}', "base_url"),
        ('{"p": {"base_url": "http://x/v1", "models": []}}', "models"),
        ('{"p": {"base_url": "http://x/v1", "models": ["m"], "colour": "red"}}', "unknown keys"),
        ("[1, 2]", "JSON object"),
    ],
)
def test_a_malformed_baton_providers_is_refused_at_start(raw: str, problem: str) -> None:
    from baton.settings import _configured_providers

    with pytest.raises(ValueError) as caught:
        _configured_providers(raw)
    assert problem in str(caught.value)


def test_routing_order() -> None:
    from models import Agent, Organization
    from orchestration.model_routing import resolve_step_model

    agent = Agent(
        config={
            "model_preferences": {
                "code_generation": "groq/llama-3.1-70b",
                "default": "gpt-4o-mini",
            },
            "model_config": {"model": "gpt-4o"},
        }
    )
    bare_agent = Agent(config={"model_config": {"model": "gpt-4o"}})
    org = Organization(settings={"default_ai_model": "sim/slow"})

    def route(settings: dict, agent: Any, org: Any, task_type: str = "code_generation") -> str:
        return resolve_step_model(
            job_settings=settings, agent=agent, organization=org, task_type=task_type
        )

    assert route({"ai_model": "sim/echo"}, agent, org) == "sim/echo"  # the job's settings
    assert route({}, agent, org) == "groq/llama-3.1-70b"  # the agent's preference for the type
    assert route({}, agent, org, "research") == "gpt-4o-mini"  # the agent's "default" entry
    assert route({}, bare_agent, org) == "gpt-4o"  # the agent's own model
    assert route({}, None, org) == "sim/slow"  # the organization's default
    assert route({}, None, None) == "sim/echo"  # no keys configured: the offline provider
