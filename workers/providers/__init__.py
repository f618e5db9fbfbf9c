"""Provider calls: the only package that imports ``openai``.

``complete(request)`` resolves the model to a provider, calls it through the SDK, retries
classified errors with exponential backoff and full jitter (honouring Retry-After), and
prices the answer from the catalog. Every attempt is recorded for the job's history.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_after_delay,
    wait_random_exponential,
)

from orchestration import model_catalog
from orchestration.errors import DomainError
from workers.providers.clients import client_for
from workers.providers.errors import ProviderError, classify

__all__ = ["CompletionRequest", "CompletionResult", "ProviderError", "complete"]

BACKOFF = wait_random_exponential(multiplier=0.2, max=5.0)


@dataclass
class CompletionRequest:
    model: str
    messages: list[dict[str, Any]]
    max_tokens: int
    temperature: float | None = None
    providers: list[str] = field(default_factory=list)
    max_retries: int = 2
    timeout_seconds: float = 60.0


@dataclass
class CompletionResult:
    text: str
    provider: str
    model: str  # provider-qualified, e.g. "sim/echo"
    prompt_tokens: int
    completion_tokens: int
    cost: Decimal
    latency_ms: int
    attempts: list[dict[str, Any]]


def _resolve(request: CompletionRequest) -> model_catalog.ResolvedModel:
    try:
        return model_catalog.resolve_model(request.model, request.providers)
    except DomainError as exc:
        raise ProviderError(
            "unknown_model", exc.message, retryable=False, model=request.model
        ) from exc


def _wait(state: RetryCallState) -> float:
    """Full-jitter backoff, or the provider's Retry-After when it gave one."""
    exc = state.outcome.exception() if state.outcome else None
    if isinstance(exc, ProviderError) and exc.retry_after is not None:
        return exc.retry_after
    return BACKOFF(state)


def complete(request: CompletionRequest) -> CompletionResult:
    resolved = _resolve(request)
    spec = model_catalog.providers().get(resolved.provider)
    if spec is None:
        raise ProviderError(
            "unknown_provider", f"unknown provider '{resolved.provider}'", retryable=False
        )
    attempts: list[dict[str, Any]] = []
    deadline = time.monotonic() + request.timeout_seconds

    def attempt() -> CompletionResult:
        started = time.monotonic()
        record: dict[str, Any] = {"provider": resolved.provider, "model": resolved.qualified}
        try:
            result = _call_once(request, resolved, spec, timeout=max(0.1, deadline - started))
        except Exception as exc:
            error = classify(exc, provider=resolved.provider, model=resolved.qualified)
            record |= {
                "status": "error",
                "error_code": error.code,
                "http_status": error.http_status,
            }
            if error.retry_after is not None:
                record["retry_after"] = error.retry_after
            record["latency_ms"] = int((time.monotonic() - started) * 1000)
            attempts.append(record)
            raise error from None
        record |= {"status": "ok", "latency_ms": result.latency_ms}
        attempts.append(record)
        result.attempts = attempts
        return result

    retrying = Retrying(
        retry=retry_if_exception(lambda e: isinstance(e, ProviderError) and e.retryable),
        stop=stop_after_attempt(request.max_retries + 1)
        | stop_after_delay(request.timeout_seconds),
        wait=_wait,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except ProviderError as exc:
        exc.attempts = attempts
        raise


def _call_once(
    request: CompletionRequest,
    resolved: model_catalog.ResolvedModel,
    spec: model_catalog.ProviderSpec,
    *,
    timeout: float,
) -> CompletionResult:
    client = client_for(spec)
    started = time.monotonic()
    kwargs: dict[str, Any] = {"model": resolved.model if spec.name != "sim" else resolved.qualified}
    if request.temperature is not None:
        kwargs["temperature"] = request.temperature
    response = client.chat.completions.create(
        messages=request.messages,  # type: ignore[arg-type]
        max_tokens=request.max_tokens,
        timeout=timeout,
        **kwargs,
    )
    latency_ms = int((time.monotonic() - started) * 1000)
    if not response.choices or response.usage is None:
        raise ProviderError(
            "malformed_response", "the answer had no choices or no usage", retryable=True,
            provider=resolved.provider, model=resolved.qualified,
        )  # fmt: skip
    usage = response.usage
    return CompletionResult(
        text=response.choices[0].message.content or "",
        provider=resolved.provider,
        model=resolved.qualified,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        cost=model_catalog.cost_of(resolved, usage.prompt_tokens, usage.completion_tokens),
        latency_ms=latency_ms,
        attempts=[],
    )
