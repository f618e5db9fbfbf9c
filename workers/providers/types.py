"""What a provider call takes and gives: the request, each attempt and what it costs,
the caller's hooks around the attempts, and the result. The call itself is
``workers/providers/calls.py``; a streamed answer, ``streaming.py``."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from orchestration.model_catalog import ResolvedModel


@dataclass
class CompletionRequest:
    model: str  # "sim/echo", "gpt-4o", "groq/llama-3.1-70b"; "" means the default model
    messages: list[dict[str, Any]]  # OpenAI chat messages
    max_tokens: int
    temperature: float | None = None
    providers: list[str] = field(default_factory=list)  # preference + fallback order
    max_retries: int = 2  # attempts after the first, per provider, retryable errors only
    timeout_seconds: float = 60.0  # per provider: its attempts and waits included
    fallback_models: dict[str, str] = field(default_factory=dict)  # provider -> model
    stream: bool = False
    sim_fault: str | None = None  # a sim behaviour forced on every sim model
    total_timeout_seconds: float | None = None  # the whole call, every provider included
    tools: list[dict[str, Any]] = field(default_factory=list)  # OpenAI ``tools`` offered


@dataclass(frozen=True)
class Attempt:
    """One call to one provider (the n-th of the whole completion, counting from 1)."""

    number: int
    resolved: ResolvedModel
    stream: bool = False
    probe: bool = False  # the circuit breaker's half-open probe

    @property
    def provider(self) -> str:
        return self.resolved.provider

    @property
    def model(self) -> str:
        return self.resolved.qualified


@dataclass(frozen=True)
class Charge:
    """What an attempt costs: the provider's reported usage, or Baton's count of a stream
    cut off before the usage arrived (``estimated``)."""

    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    estimated: bool = False


class CallHooks:
    """What the caller does around each attempt; every hook is a no-op here.

    ``before_attempt`` may raise to stop the whole call (a budget refusal): no request is
    sent and the exception propagates out of ``complete``.
    """

    def before_attempt(self, attempt: Attempt) -> None:
        return None

    def on_delta(self, attempt: Attempt, text: str) -> None:
        return None

    def after_attempt(
        self, attempt: Attempt, record: dict[str, Any], charge: Charge | None
    ) -> None:
        return None

    def on_skip(self, record: dict[str, Any]) -> None:
        """A provider passed over without a call (breaker open, no key, no price)."""
        return None


@dataclass
class CompletionResult:
    text: str
    provider: str
    model: str  # provider-qualified, e.g. "sim/echo"
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    latency_ms: int  # the whole call, retries, waits and fallbacks included
    attempts: list[dict[str, Any]]  # every call made, on every provider, in order
    finish_reason: str | None = None  # "stop", or "length" when max_tokens cut the answer
    attempt_number: int = 1  # which attempt answered (its budget/ledger key)
    usage_estimated: bool = False  # a stream that never reported usage: Baton counted
    skipped: list[dict[str, Any]] = field(default_factory=list)  # providers passed over
    providers_tried: list[str] = field(default_factory=list)
    # The model's tool calls ({"id", "name", "arguments"}: arguments as the JSON text sent).
    tool_calls: list[dict[str, str]] = field(default_factory=list)


# -- inside the provider package: one provider's answer, a stream's progress ---------


@dataclass
class Answer:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None
    estimated: bool = False
    tool_calls: list[dict[str, str]] = field(default_factory=list)


@dataclass
class StreamProgress:
    opened: bool = False  # the provider accepted the request and started answering
    parts: list[str] = field(default_factory=list)
