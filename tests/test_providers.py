"""The provider interface: the sim provider behind the real SDK, retries, errors, pricing,
and a real OpenAI-compatible HTTP server on 127.0.0.1 reached over TCP.

No database needed: these tests only call ``workers.providers``.
"""

from __future__ import annotations

import json
import logging
import math
import pickle
import re
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import workers.providers as providers
from baton.settings import reset_settings_cache
from orchestration.model_catalog import BUILTIN_PROVIDERS, ProviderSpec, ResolvedModel, cost_of
from tests.fake_openai import RATE_LIMITED, completion_body
from tests.helpers import ask
from workers.providers import (
    CompletionRequest,
    ProviderError,
    complete,
    register_provider,
)
from workers.providers.clients import get_client

ROOT = Path(__file__).resolve().parent.parent
SCORE = re.compile(r"^Score: (\d+\.\d)/10$", re.MULTILINE)


@pytest.fixture
def api_key(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """An OpenAI key in the environment, read through settings like production."""
    key = f"sk-test-{uuid.uuid4().hex}"
    monkeypatch.setenv("OPENAI_API_KEY", key)
    reset_settings_cache()
    yield key
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    reset_settings_cache()


# --- sim ------------------------------------------------------------------------------


def test_sim_echo_is_deterministic_and_reports_usage() -> None:
    prompt = "Summarise the design of the job engine in three bullet points."
    first = complete(ask("sim/echo", prompt))
    second = complete(ask("sim/echo", prompt))

    assert first.text == second.text
    assert (first.prompt_tokens, first.completion_tokens) == (
        second.prompt_tokens,
        second.completion_tokens,
    )
    assert first.provider == "sim" and first.model == "sim/echo"
    assert prompt in first.text
    assert SCORE.search(first.text)
    assert first.finish_reason == "stop"
    assert first.prompt_tokens == math.ceil(len("You are terse." + prompt) / 4)
    assert first.completion_tokens == math.ceil(len(first.text) / 4)
    assert [a["status"] for a in first.attempts] == ["ok"]
    assert first.attempts[0]["provider"] == "sim"
    assert first.attempts[0]["model"] == "sim/echo"

    other = complete(ask("sim/echo", "A different question entirely?"))
    assert other.text != first.text


def test_sim_quotes_only_the_start_of_a_long_prompt() -> None:
    prompt = "word " * 200
    result = complete(ask("sim/echo", prompt))
    assert ("word " * 32).strip() in result.text
    assert ("word " * 40).strip() not in result.text


def test_cost_is_an_exact_decimal_from_the_price_table() -> None:
    result = complete(ask("sim/echo"))
    expected = (
        Decimal(result.prompt_tokens) * Decimal("0.50")
        + Decimal(result.completion_tokens) * Decimal("1.50")
    ) / Decimal(1_000_000)
    assert isinstance(result.cost, Decimal)
    assert result.cost == expected
    assert result.cost == cost_of(
        ResolvedModel("sim", "echo"), result.prompt_tokens, result.completion_tokens
    )


def test_max_tokens_truncates_the_answer() -> None:
    result = complete(ask("sim/echo", max_tokens=5))
    assert result.completion_tokens == 5
    assert result.finish_reason == "length"
    assert len(result.text) <= 20


def test_bare_model_names_resolve_through_the_catalog() -> None:
    result = complete(ask("echo", providers=["sim"]))
    assert result.model == "sim/echo"


def test_flaky_is_retried_to_success_honouring_retry_after() -> None:
    result = complete(ask("sim/flaky", max_retries=2))

    assert result.model == "sim/flaky"
    assert [a["status"] for a in result.attempts] == ["error", "error", "ok"]
    for failed in result.attempts[:2]:
        assert failed["error_code"] == "rate_limited"
        assert failed["http_status"] == 429
        assert failed["retry_after"] == 0.0
        assert isinstance(failed["latency_ms"], int)
    json.dumps(result.attempts)  # stored in job history as JSON


def test_flaky_with_one_retry_fails_rate_limited() -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/flaky", max_retries=1))
    error = caught.value
    assert error.code == "rate_limited"
    assert error.retryable is True
    assert error.http_status == 429
    assert error.provider == "sim" and error.model == "sim/flaky"
    assert [a["error_code"] for a in error.attempts] == ["rate_limited", "rate_limited"]


def test_server_errors_are_retried_then_raised() -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/error", max_retries=2))
    error = caught.value
    assert error.code == "server_error"
    assert error.http_status == 500
    assert len(error.attempts) == 3
    assert all(a["status"] == "error" and a["http_status"] == 500 for a in error.attempts)
    assert str(error).startswith("server_error: ")


def test_timeout_fails_quickly() -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/timeout", max_retries=2, timeout_seconds=30))
    assert time.monotonic() - started < 3
    assert caught.value.code == "timeout"
    assert caught.value.retryable is True
    assert [a["error_code"] for a in caught.value.attempts] == ["timeout"] * 3


def test_the_timeout_budget_bounds_a_slow_provider() -> None:
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/slow", max_retries=5, timeout_seconds=0.5))
    assert time.monotonic() - started < 0.9
    assert caught.value.code == "timeout"


def test_sim_slow_answers_in_about_a_second() -> None:
    result = complete(ask("sim/slow"))
    assert 900 <= result.latency_ms < 3000
    assert result.model == "sim/slow"


def test_malformed_body_is_a_retryable_malformed_response() -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/malformed", max_retries=1))
    assert caught.value.code == "malformed_response"
    assert caught.value.retryable is True
    assert [a["error_code"] for a in caught.value.attempts] == ["malformed_response"] * 2


@pytest.mark.parametrize("model", ["nope/gpt-4o", "sim/nope", "gpt-99", "groq/gpt-4o"])
def test_unknown_provider_or_model_is_not_retried(model: str) -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask(model))
    assert caught.value.code == "unknown_model"
    assert caught.value.retryable is False
    assert caught.value.attempts == []


def test_invalid_request_is_a_provider_error() -> None:
    with pytest.raises(ProviderError) as caught:
        complete(ask("sim/echo", max_tokens=0))
    assert caught.value.code == "invalid_request"


def test_provider_error_survives_pickling() -> None:
    error = ProviderError("timeout", "too slow", retryable=True, provider="sim", attempts=[{}])
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.code, copy.message, copy.retryable, copy.provider, copy.attempts) == (
        "timeout",
        "too slow",
        True,
        "sim",
        [{}],
    )


def test_sim_streams_chunks_with_final_usage() -> None:
    client = get_client(BUILTIN_PROVIDERS["sim"])
    messages = [{"role": "user", "content": "Stream this, please."}]
    stream = client.chat.completions.create(
        model="echo",
        messages=messages,
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    whole = complete(CompletionRequest(model="sim/echo", messages=messages, max_tokens=200))
    assert text == whole.text
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == whole.completion_tokens


def test_clients_are_cached_with_sdk_retries_off() -> None:
    spec = BUILTIN_PROVIDERS["sim"]
    client = get_client(spec)
    assert get_client(spec) is client
    assert client.max_retries == 0
    assert client.timeout == spec.timeout_seconds


# --- keys -----------------------------------------------------------------------------


def test_openai_without_a_key_is_missing_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    other_key = f"gsk_{uuid.uuid4().hex}"
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    monkeypatch.setenv("GROQ_API_KEY", other_key)
    reset_settings_cache()
    try:
        with pytest.raises(ProviderError) as caught:
            complete(ask("gpt-4o"))
    finally:
        monkeypatch.delenv("GROQ_API_KEY")
        reset_settings_cache()
    error = caught.value
    assert error.code == "missing_api_key"
    assert error.retryable is False
    assert error.provider == "openai" and error.model == "openai/gpt-4o"
    assert "OPENAI_API_KEY" in error.message
    assert error.attempts == []
    assert other_key not in str(error) + repr(error.__dict__)


def test_only_workers_providers_imports_openai() -> None:
    pattern = re.compile(r"^\s*(import openai|from openai\b)", re.MULTILINE)
    offenders = [
        str(path.relative_to(ROOT))
        for folder in ("api", "baton", "models", "orchestration", "workers", "bench")
        for path in (ROOT / folder).rglob("*.py")
        if pattern.search(path.read_text()) and (ROOT / "workers" / "providers") not in path.parents
    ]
    assert offenders == []


# --- a real OpenAI-compatible server over TCP -----------------------------------------


def local_spec(base_url: str, name: str = "local") -> ProviderSpec:
    return ProviderSpec(name, base_url, "openai_api_key", ("gpt-4o-mini",), timeout_seconds=10)


def test_real_server_over_tcp_honours_retry_after(
    fake_openai: Any, api_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    server = fake_openai([(429, {"Retry-After": "1"}, RATE_LIMITED), (200, {}, completion_body)])
    spec = local_spec(server.base_url)

    started = time.monotonic()
    result = complete(
        ask("local/gpt-4o-mini", max_retries=2, timeout_seconds=10), specs={"local": spec}
    )
    elapsed = time.monotonic() - started

    assert elapsed >= 0.95  # the backoff alone would wait at most ~0.2 s
    assert result.text.endswith("Score: 7.5/10")
    assert (result.provider, result.model) == ("local", "local/gpt-4o-mini")
    assert (result.prompt_tokens, result.completion_tokens) == (21, 9)
    assert result.cost == cost_of(ResolvedModel("local", "gpt-4o-mini"), 21, 9)
    assert [a["status"] for a in result.attempts] == ["error", "ok"]
    assert result.attempts[0]["error_code"] == "rate_limited"
    assert result.attempts[0]["retry_after"] == 1.0

    assert len(server.requests) == 2  # the SDK made no retries of its own
    for sent in server.requests:
        assert sent["path"] == "/v1/chat/completions"
        assert sent["headers"]["authorization"] == f"Bearer {api_key}"
        assert sent["body"]["model"] == "gpt-4o-mini"
        assert sent["body"]["max_tokens"] == 256
    assert api_key not in repr(result)
    assert api_key not in caplog.text


def test_the_unstreamed_call_sends_what_the_sdks_create_sends(
    fake_openai: Any, api_key: str
) -> None:
    """workers/providers/calls.py posts through the SDK's generic ``client.post`` (without
    ``create``'s TypedDict transform): the server gets the request that
    ``client.chat.completions.create`` sends with the same arguments."""
    server = fake_openai([(200, {}, completion_body)])
    spec = local_spec(server.base_url)
    tools = [
        {
            "type": "function",
            "function": {
                "name": "calculator",
                "description": "Evaluate an arithmetic expression.",
                "parameters": {
                    "type": "object",
                    "properties": {"expression": {"type": "string"}},
                    "required": ["expression"],
                },
            },
        }
    ]
    request = ask("local/gpt-4o-mini", temperature=0.2, tools=tools, max_retries=0)
    complete(request, specs={"local": spec})
    get_client(spec).chat.completions.create(
        model="gpt-4o-mini", messages=request.messages, max_tokens=256, temperature=0.2,
        tools=tools, timeout=5,
    )  # fmt: skip
    ours, sdks = server.requests

    def sent(r: dict[str, Any]) -> dict[str, Any]:  # the timeout differs by design
        return {**r, "headers": {**r["headers"], "x-stainless-read-timeout": None}}

    assert sent(ours) == sent(sdks)
    assert ours["headers"]["authorization"] == f"Bearer {api_key}"
    assert ours["body"]["tools"] == tools and ours["body"]["temperature"] == 0.2


def test_an_echoed_key_never_leaks(
    fake_openai: Any,
    api_key: str,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setattr(providers.registry, "_registry", {})
    echo = {"error": {"message": f"Incorrect API key provided: {api_key}. Bearer {api_key}"}}
    server = fake_openai([(401, {}, echo)])
    register_provider(local_spec(server.base_url, "registered"))

    with pytest.raises(ProviderError) as caught:
        complete(ask("registered/gpt-4o-mini", max_retries=3))

    error = caught.value
    assert error.code == "auth_error"
    assert error.retryable is False
    assert len(server.requests) == 1  # never retry a 401
    assert "[redacted]" in error.message
    exposed = str(error) + repr(error.__dict__) + json.dumps(error.attempts) + caplog.text
    assert api_key not in exposed
    assert api_key[8:] not in exposed


def test_a_retry_after_beyond_the_budget_gives_up_at_once(fake_openai: Any, api_key: str) -> None:
    server = fake_openai([(429, {"Retry-After": "30"}, RATE_LIMITED)])
    started = time.monotonic()
    with pytest.raises(ProviderError) as caught:
        complete(
            ask("local/gpt-4o-mini", max_retries=3, timeout_seconds=2),
            specs={"local": local_spec(server.base_url)},
        )
    assert time.monotonic() - started < 1.5
    assert caught.value.code == "rate_limited"
    assert caught.value.retry_after == 30.0
    assert len(server.requests) == 1


def test_bad_requests_are_not_retried(fake_openai: Any, api_key: str) -> None:
    body = {"error": {"message": "context length exceeded", "type": "invalid_request_error"}}
    server = fake_openai([(400, {}, body)])
    with pytest.raises(ProviderError) as caught:
        complete(ask("local/gpt-4o-mini"), specs={"local": local_spec(server.base_url)})
    assert caught.value.code == "bad_request"
    assert caught.value.http_status == 400
    assert "context length exceeded" in caught.value.message
    assert len(server.requests) == 1


@pytest.mark.parametrize(
    "reshape",
    [
        lambda body: {**body, "choices": {"0": body["choices"][0]}},  # not a list
        lambda body: {**body, "choices": []},
        lambda body: {**body, "usage": None},
        lambda body: {**body, "usage": {"prompt_tokens": "12", "completion_tokens": 3}},
        lambda body: ["not", "an", "object"],
    ],
    ids=["choices-object", "no-choices", "usage-null", "usage-string", "body-a-list"],
)
def test_an_answer_of_the_wrong_shape_is_malformed_never_a_crash(
    fake_openai: Any, api_key: str, reshape: Any
) -> None:
    """The SDK hands the JSON back as it came (``cast_to=object``): each part read is
    checked, so a wrong shape is the provider's retryable fault, not a TypeError."""
    server = fake_openai([(200, {}, lambda request: reshape(completion_body(request)))])
    with pytest.raises(ProviderError) as caught:
        complete(
            ask("local/gpt-4o-mini", max_retries=1), specs={"local": local_spec(server.base_url)}
        )
    assert caught.value.code == "malformed_response" and caught.value.retryable
    assert len(server.requests) == 2


def test_odd_optional_parts_of_an_answer_read_as_absent(fake_openai: Any, api_key: str) -> None:
    def odd(request: dict[str, Any]) -> dict[str, Any]:
        body = completion_body(request)
        body["choices"][0]["message"] = {
            "role": "assistant",
            "content": 42,  # not text
            "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "lookup", "arguments": '{"q": "x"}'}},
                "junk",
                {"id": "call_2", "function": None},
            ],
        }  # fmt: skip
        return body

    server = fake_openai([(200, {}, odd)])
    result = complete(ask("local/gpt-4o-mini"), specs={"local": local_spec(server.base_url)})
    assert result.text == ""
    assert result.prompt_tokens > 0 and result.finish_reason == "stop"
    assert result.tool_calls == [
        {"id": "call_1", "name": "lookup", "arguments": '{"q": "x"}'},
        {"id": "", "name": "", "arguments": ""},
        {"id": "call_2", "name": "", "arguments": ""},
    ]


def test_a_response_without_usage_is_malformed(fake_openai: Any, api_key: str) -> None:
    def no_usage(request: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in completion_body(request).items() if k != "usage"}

    server = fake_openai([(200, {}, no_usage)])
    with pytest.raises(ProviderError) as caught:
        complete(
            ask("local/gpt-4o-mini", max_retries=1), specs={"local": local_spec(server.base_url)}
        )
    assert caught.value.code == "malformed_response"
    assert len(server.requests) == 2
