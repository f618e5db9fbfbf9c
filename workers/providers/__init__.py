"""Provider calls: the only package that imports ``openai``.

``complete(request)`` resolves the model to a provider and calls it through the SDK:
- retries retryable errors with exponential backoff and full jitter (or the provider's
  Retry-After), bounded by ``max_retries`` and ``timeout_seconds`` per provider;
- asks the provider's circuit breaker before every attempt (an open breaker skips the
  provider; a half-open one lets exactly one probe through) and reports every outcome;
- falls back along the agent's ordered ``providers`` when a provider cannot answer
  (retries spent, breaker open, no usable key), with the mapped model on each;
- streams when asked (``stream_options.include_usage`` for the exact final usage),
  handing every text delta to the caller as it arrives;
- prices every answer from the catalog. A stream cut off midway is charged for what was
  generated: the prompt estimate plus the tokens of the partial text.

The caller sees each attempt as it happens through ``CallHooks`` (the step engine reserves
budget before an attempt, writes it as an event row after, and publishes stream deltas).

The package: ``types`` (request, attempt, charge, hooks, result), ``calls`` (the
fallback-and-retry loop), ``streaming``, ``registry`` (providers added in process),
``clients`` (SDK clients and keys), ``errors`` (classification), ``estimate`` (token
counts), ``sim`` (the simulated provider).
"""

from __future__ import annotations

from workers.providers.calls import complete
from workers.providers.errors import ProviderError
from workers.providers.registry import provider_specs, register_provider
from workers.providers.types import (
    Attempt,
    CallHooks,
    Charge,
    CompletionRequest,
    CompletionResult,
)

__all__ = [
    "Attempt",
    "CallHooks",
    "Charge",
    "CompletionRequest",
    "CompletionResult",
    "ProviderError",
    "complete",
    "provider_specs",
    "register_provider",
]
