"""Provider calls: the only package that imports ``openai``.

``complete(request)`` resolves the model to a provider, calls it through the SDK, retries
retryable errors with exponential backoff and full jitter (or the provider's Retry-After),
bounded by ``max_retries`` and ``timeout_seconds``, and prices the answer from the
catalog. Every attempt is recorded, for the job's history and the usage ledger.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)

from orchestration import model_catalog
from orchestration.errors import DomainError
from orchestration.model_catalog import ProviderSpec, ResolvedModel
from workers.providers.clients import get_client, secrets_for
from workers.providers.errors import ProviderError, classify

__all__ = [
    "CompletionRequest",
    "CompletionResult",
    "ProviderError",
    "complete",
    "provider_specs",
    "register_provider",
]

log = logging.getLogger(__name__)

# Full jitter: a random wait in [0, min(cap, base * 2**attempt)]; small so tests stay fast.
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 4.0
# Not worth starting an attempt with less time than this left in the budget.
MIN_ATTEMPT_SECONDS = 0.05


@dataclass
class CompletionRequest:
    model: str  # "sim/echo", "gpt-4o", "groq/llama-3.1-70b"; "" means the default model
    messages: list[dict[str, Any]]  # OpenAI chat messages
    max_tokens: int
    temperature: float | None = None
    providers: list[str] = field(default_factory=list)  # preference order for bare names
    max_retries: int = 2  # attempts after the first, for retryable errors only
    timeout_seconds: float = 60.0  # the whole call, retries and waits included


@dataclass
class CompletionResult:
    text: str
    provider: str
    model: str  # provider-qualified, e.g. "sim/echo"
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    latency_ms: int  # the whole call, retries and waits included; per attempt in attempts
    attempts: list[dict[str, Any]]
    finish_reason: str | None = None  # "stop", or "length" when max_tokens cut the answer


_registry: dict[str, ProviderSpec] = {}
_registry_lock = threading.Lock()


def register_provider(spec: ProviderSpec) -> None:
    """Add (or replace) an OpenAI-compatible provider for this process."""
    with _registry_lock:
        _registry[spec.name] = spec


def provider_specs(extra: Mapping[str, ProviderSpec] | None = None) -> dict[str, ProviderSpec]:
    """Built-in providers, then registered ones, then ``extra`` (later wins)."""
    with _registry_lock:
        return {**model_catalog.providers(), **_registry, **(extra or {})}


def complete(
    request: CompletionRequest, *, specs: Mapping[str, ProviderSpec] | None = None
) -> CompletionResult:
    """One chat completion, retried; raises ProviderError (with ``attempts``) on failure."""
    _validate(request)
    all_specs = provider_specs(specs)
    resolved = _resolve(request, all_specs)
    spec = all_specs[resolved.provider]
    where = {"provider": spec.name, "model": resolved.qualified}
    try:
        # Before any call: never spend money on an answer that cannot be priced.
        model_catalog.price_for(resolved)
    except DomainError as exc:
        raise ProviderError("unpriced_model", _detail(exc), **where) from None
    try:
        client = get_client(spec)  # missing_api_key: nothing is sent without a key
    except ProviderError as exc:
        exc.model = resolved.qualified
        raise
    secrets = secrets_for(spec)
    params = _params(request, resolved, spec)
    attempts: list[dict[str, Any]] = []
    started = time.monotonic()
    deadline = started + request.timeout_seconds

    def attempt() -> tuple[str, int, int, str | None]:
        begun = time.monotonic()
        timeout = min(deadline - begun, spec.timeout_seconds)
        try:
            response = client.chat.completions.create(**params, timeout=max(timeout, 0.001))
            parsed = _parse(response, where)
        except Exception as exc:
            error = classify(exc, provider=spec.name, model=resolved.qualified, secrets=secrets)
            if error is None:
                raise  # not a provider failure: a bug, let it surface as one
            attempts.append(_record(where, begun, error))
            log.warning(
                "provider attempt %d failed: %s %s (HTTP %s)",
                len(attempts), resolved.qualified, error.code, error.http_status,
            )  # fmt: skip
            raise error from None
        attempts.append(_record(where, begun))
        return parsed

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
        wait=_wait(deadline),
        stop=stop_any(stop_after_attempt(request.max_retries + 1), _stop_at(deadline)),
        reraise=True,
    )
    try:
        text, prompt_tokens, completion_tokens, finish_reason = retrying(attempt)
    except ProviderError as exc:
        exc.attempts = attempts
        raise
    return CompletionResult(
        text=text,
        provider=spec.name,
        model=resolved.qualified,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=model_catalog.cost_of(resolved, prompt_tokens, completion_tokens),
        latency_ms=_ms_since(started),
        attempts=attempts,
        finish_reason=finish_reason,
    )


def _validate(request: CompletionRequest) -> None:
    # A ProviderError, not a ValueError: the engine fails the step cleanly on it.
    problems = [
        "max_tokens must be >= 1" if request.max_tokens < 1 else "",
        "max_retries must be >= 0" if request.max_retries < 0 else "",
        "timeout_seconds must be > 0" if request.timeout_seconds <= 0 else "",
        "messages must not be empty" if not request.messages else "",
    ]
    if message := "; ".join(p for p in problems if p):
        raise ProviderError("invalid_request", message, model=request.model)


def _resolve(request: CompletionRequest, all_specs: Mapping[str, ProviderSpec]) -> ResolvedModel:
    """The catalog resolves; only ``provider/model`` of a non-built-in provider is ours."""
    name = request.model or model_catalog.default_model()
    provider, slash, model = name.partition("/")
    if slash and provider in all_specs and provider not in model_catalog.providers():
        if model in all_specs[provider].models:
            return ResolvedModel(provider, model)
        message = f"provider '{provider}' has no model '{model}'"
        raise ProviderError("unknown_model", message, provider=provider, model=name)
    try:
        return model_catalog.resolve_model(name, request.providers)
    except DomainError as exc:
        raise ProviderError("unknown_model", _detail(exc), model=name) from None


def _params(request: CompletionRequest, resolved: ResolvedModel, spec: ProviderSpec) -> dict:
    # OpenAI deprecated max_tokens (o-series models refuse it); most compatible servers
    # still only know max_tokens. A spec can choose with extra["max_tokens_param"].
    default_param = "max_completion_tokens" if spec.name == "openai" else "max_tokens"
    params: dict[str, Any] = {
        "model": resolved.model,
        "messages": request.messages,
        spec.extra.get("max_tokens_param", default_param): request.max_tokens,
    }
    if request.temperature is not None:
        params["temperature"] = request.temperature
    return params


def _parse(response: Any, where: dict[str, str]) -> tuple[str, int, int, str | None]:
    """(text, prompt_tokens, completion_tokens, finish_reason); usage is required."""
    choices = getattr(response, "choices", None)  # a non-JSON 200 parses to a plain str
    usage = getattr(response, "usage", None)
    prompt = getattr(usage, "prompt_tokens", None)
    completion = getattr(usage, "completion_tokens", None)
    if not choices or not isinstance(prompt, int) or not isinstance(completion, int):
        missing = "choices" if not choices else "token usage"
        raise ProviderError(
            "malformed_response", f"{where['model']}: the answer has no {missing}",
            retryable=True, **where,
        )  # fmt: skip
    choice = choices[0]
    message = getattr(choice, "message", None)
    text = getattr(message, "content", None) or ""
    return text, prompt, completion, getattr(choice, "finish_reason", None)


def _wait(deadline: float) -> Callable[[RetryCallState], float]:
    backoff = wait_random_exponential(multiplier=BACKOFF_BASE_SECONDS, max=BACKOFF_CAP_SECONDS)

    def wait(state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        retry_after = getattr(exc, "retry_after", None)
        delay = retry_after if retry_after is not None else backoff(state)
        return max(0.0, min(delay, deadline - time.monotonic()))

    return wait


def _stop_at(deadline: float) -> Callable[[RetryCallState], bool]:
    # Tenacity computes the wait before asking stop: give up rather than sleep to the
    # deadline (e.g. a Retry-After longer than the budget) and start a hopeless attempt.
    def stop(state: RetryCallState) -> bool:
        sleep = getattr(state, "upcoming_sleep", 0.0)  # set before stop since tenacity 8.3
        return time.monotonic() + sleep > deadline - MIN_ATTEMPT_SECONDS

    return stop


def _record(
    where: dict[str, str], begun: float, error: ProviderError | None = None
) -> dict[str, Any]:
    record: dict[str, Any] = {**where, "status": "ok" if error is None else "error"}
    if error is not None:
        record["error_code"] = error.code
        if error.http_status is not None:
            record["http_status"] = error.http_status
        if error.retry_after is not None:
            record["retry_after"] = error.retry_after
    record["latency_ms"] = _ms_since(begun)
    return record


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _detail(exc: DomainError) -> str:
    details = exc.details if isinstance(exc.details, list) else []
    return "; ".join(str(d.get("message")) for d in details if isinstance(d, dict)) or exc.message
