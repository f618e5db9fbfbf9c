"""One completion: the fallback-and-retry loop over the model's providers.

``complete(request)`` resolves the model, then tries each candidate provider in order
(the agent's ``providers``, with the mapped ``fallback_models``): on each, attempts are
retried with full-jitter backoff (or the provider's Retry-After) within ``max_retries``
and ``timeout_seconds``, the provider's circuit breaker is asked before every attempt
and told every outcome, and the caller's ``CallHooks`` see each attempt. Every answer is
priced from the catalog.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from tenacity import (
    RetryCallState,
    Retrying,
    retry_if_exception,
    stop_after_attempt,
    stop_any,
    wait_random_exponential,
)

from orchestration import breaker as breakers
from orchestration import metrics
from orchestration.errors import DomainError
from orchestration.model_catalog import Catalog, ProviderContext, ProviderSpec, ResolvedModel
from workers.providers import sim
from workers.providers.clients import get_client, secrets_for
from workers.providers.errors import ProviderError, classify
from workers.providers.registry import provider_specs
from workers.providers.streaming import partial_charge, streamed
from workers.providers.types import (
    Answer,
    Attempt,
    CallHooks,
    Charge,
    CompletionRequest,
    CompletionResult,
    StreamProgress,
)

log = logging.getLogger(__name__)

# Full jitter: a random wait in [0, min(cap, base * 2**attempt)]; small so tests stay fast.
BACKOFF_BASE_SECONDS = 0.1
BACKOFF_CAP_SECONDS = 4.0
# Not worth starting an attempt with less time than this left in the budget.
MIN_ATTEMPT_SECONDS = 0.05
# A half-open probe's hold on the breaker outlives its call by this much at most.
PROBE_LEASE_MARGIN_SECONDS = 5.0


@dataclass
class _Call:
    """State shared by every candidate of one completion."""

    request: CompletionRequest
    context: ProviderContext
    breaker: breakers.Breaker
    hooks: CallHooks
    started: float
    deadline: float
    attempts: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[dict[str, Any]] = field(default_factory=list)
    tried: list[str] = field(default_factory=list)
    numbers: itertools.count = field(default_factory=lambda: itertools.count(1))

    @property
    def catalog(self) -> Catalog:
        return self.context.catalog

    def skip(self, error: ProviderError) -> ProviderError:
        record = {
            "provider": error.provider,
            "model": error.model,
            "status": "skipped",
            "error_code": error.code,
            "message": error.message,
        }
        self.skipped.append(record)
        self.hooks.on_skip(record)
        return error


def complete(
    request: CompletionRequest,
    *,
    specs: Mapping[str, ProviderSpec] | None = None,
    context: ProviderContext | None = None,
    breaker: breakers.Breaker | None = None,
    hooks: CallHooks | None = None,
) -> CompletionResult:
    """One chat completion, retried and falling back; raises ProviderError (with every
    ``attempts`` record and ``providers_tried``) when no provider answered."""
    _validate(request)
    if context is None or specs:
        base = context.catalog.specs if context is not None else provider_specs()
        merged = Catalog({**base, **(specs or {})})
        context = (
            ProviderContext(merged)
            if context is None
            else ProviderContext(
                merged, context.keys, context.key_problems, context.org_scoped,
                context.organization_id,
            )
        )  # fmt: skip
    started = time.monotonic()
    total = request.total_timeout_seconds
    call = _Call(
        request=request,
        context=context,
        breaker=breaker or breakers.NoBreaker(),
        hooks=hooks or CallHooks(),
        started=started,
        deadline=started + total if total else float("inf"),
    )
    primary = _resolve(request, context.catalog)
    try:
        chain = context.catalog.candidates(primary, request.providers, request.fallback_models)
    except DomainError:  # a stale fallback_models entry must not stop the primary
        chain = [primary]
    errors: list[ProviderError] = []
    for index, resolved in enumerate(chain):
        call.tried.append(resolved.provider)
        try:
            return _call_provider(call, resolved)
        except ProviderError as exc:
            errors.append(exc)
            if index == len(chain) - 1 or not exc.falls_back:
                break
            if time.monotonic() > call.deadline - MIN_ATTEMPT_SECONDS:
                break
            log.warning(
                "provider %s failed (%s); falling back to %s",
                resolved.qualified, exc.code, chain[index + 1].qualified,
            )  # fmt: skip
    raise _final_error(errors, call)


def _final_error(errors: list[ProviderError], call: _Call) -> ProviderError:
    last = errors[-1]
    if len(errors) > 1:
        tried = "; ".join(f"{e.model or e.provider}: {e.code}" for e in errors)
        last = ProviderError(
            last.code,
            f"{last.message} (every provider failed: {tried})",
            retryable=last.retryable,
            provider=last.provider,
            model=last.model,
            http_status=last.http_status,
            retry_after=last.retry_after,
        )
    last.attempts = call.attempts
    last.skipped = call.skipped
    last.providers_tried = list(call.tried)
    return last


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


def _resolve(request: CompletionRequest, catalog: Catalog) -> ResolvedModel:
    name = request.model or catalog.default_model()
    try:
        return catalog.resolve(name, request.providers)
    except DomainError as exc:
        raise ProviderError("unknown_model", _detail(exc), model=name) from None


def _identity(call: _Call, resolved: ResolvedModel) -> str:
    behaviour = (call.request.sim_fault or resolved.model) if resolved.provider == "sim" else None
    scope = call.context.breaker_scope(resolved.provider)
    return breakers.identity(scope, resolved.provider, behaviour)


def _call_provider(call: _Call, resolved: ResolvedModel) -> CompletionResult:
    """Every attempt on one provider, retried; a ProviderError when it cannot answer."""
    request, catalog = call.request, call.catalog
    spec = catalog.specs[resolved.provider]
    where = {"provider": spec.name, "model": resolved.qualified}
    try:
        # Before any call: never spend money on an answer that cannot be priced.
        catalog.price_for(resolved)
    except DomainError as exc:
        raise call.skip(ProviderError("unpriced_model", _detail(exc), **where)) from None
    try:
        client = get_client(spec, call.context)  # missing_api_key: nothing sent without a key
    except ProviderError as exc:
        exc.model = resolved.qualified
        raise call.skip(exc) from None
    secrets = secrets_for(spec, call.context)
    params = _params(request, resolved, spec)
    unstreamed = None if request.stream else _unstreamed(params)
    identity = _identity(call, resolved)
    begun_provider = time.monotonic()
    deadline = min(begun_provider + request.timeout_seconds, call.deadline)

    def attempt() -> tuple[Answer, Attempt]:
        timeout = max(min(deadline - time.monotonic(), spec.timeout_seconds), 0.001)
        permit = call.breaker.allow(identity, timeout + PROBE_LEASE_MARGIN_SECONDS)
        if not permit.allowed:
            why = f"last failure: {permit.last_error}" if permit.last_error else "open"
            message = f"{resolved.qualified}: the provider's circuit breaker is open ({why})"
            raise call.skip(ProviderError("circuit_open", message, **where))
        info = Attempt(
            next(call.numbers), resolved, request.stream, permit.decision.value == "probe"
        )
        try:
            call.hooks.before_attempt(info)
        except BaseException:
            call.breaker.release(permit)
            raise
        begun = time.monotonic()
        progress = StreamProgress()
        try:
            if request.stream:
                answer = streamed(
                    client, params, timeout, deadline, info, call.hooks, progress, where
                )
            else:
                body, options = unstreamed  # type: ignore[misc]
                # ``object``: the JSON as it came, not built into the SDK's models (a
                # sim call's ~0.17 ms of CPU); the few fields read are checked here.
                response = client.post(
                    "/chat/completions",
                    cast_to=object,
                    body=body,
                    options={**options, "timeout": timeout},
                )
                answer = _parse(response, where)
        except Exception as exc:
            error = classify(
                exc, provider=spec.name, model=resolved.qualified, secrets=secrets,
                mid_stream=progress.opened,
            )  # fmt: skip
            if error is None:
                call.breaker.release(permit)
                raise  # not a provider failure: a bug, let it surface as one
            call.breaker.record(permit, failed=error.counts_against_provider, error_code=error.code)
            charge = partial_charge(catalog, resolved, request, progress)
            record = _record(where, begun, info, error=error, charge=charge)
            call.attempts.append(record)
            log.warning(
                "provider attempt %d failed: %s %s (HTTP %s)",
                info.number, resolved.qualified, error.code, error.http_status,
            )  # fmt: skip
            call.hooks.after_attempt(info, record, charge)
            raise error from None
        call.breaker.record(permit, failed=False)
        charge = Charge(
            answer.prompt_tokens,
            answer.completion_tokens,
            catalog.cost_of(resolved, answer.prompt_tokens, answer.completion_tokens),
            answer.estimated,
        )
        record = _record(where, begun, info, charge=charge)
        call.attempts.append(record)
        call.hooks.after_attempt(info, record, charge)
        return answer, info

    retrying = Retrying(
        retry=retry_if_exception(
            lambda e: isinstance(e, ProviderError) and e.retryable and e.code != "circuit_open"
        ),
        wait=_wait(deadline),
        stop=stop_any(stop_after_attempt(request.max_retries + 1), _stop_at(deadline)),
        reraise=True,
    )
    answer, info = retrying(attempt)
    return CompletionResult(
        text=answer.text,
        provider=spec.name,
        model=resolved.qualified,
        prompt_tokens=answer.prompt_tokens,
        completion_tokens=answer.completion_tokens,
        cost=catalog.cost_of(resolved, answer.prompt_tokens, answer.completion_tokens),
        latency_ms=_ms_since(call.started),
        attempts=call.attempts,
        finish_reason=answer.finish_reason,
        attempt_number=info.number,
        usage_estimated=answer.estimated,
        skipped=call.skipped,
        providers_tried=list(call.tried),
        tool_calls=answer.tool_calls,
    )


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
    if request.tools:
        params["tools"] = request.tools
    if spec.name == "sim" and request.sim_fault:
        params["extra_headers"] = {sim.FAULT_HEADER: request.sim_fault}
    return params


def _unstreamed(params: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(body, request options) for the SDK's generic ``client.post`` that send what
    ``client.chat.completions.create(**params)`` sends, unstreamed: the same JSON body,
    headers, auth (``create``'s ``security``: the bearer key only) and response type.
    ``create`` runs the body through its TypedDict transform first, which changes
    nothing in a body built of plain chat messages and tools (no aliased or formatted
    fields) and was a sixth of a sim step's CPU."""
    body = dict(params)
    options: dict[str, Any] = {"security": {"bearer_auth": True}}
    if headers := body.pop("extra_headers", None):
        options["headers"] = headers
    return body, options


def _parse(response: Any, where: dict[str, str]) -> Answer:
    """Text, usage and finish reason of a chat completion's JSON; usage is required."""
    body = _mapping(response)  # a non-JSON 200 comes as a str
    choices, usage = body.get("choices"), _mapping(body.get("usage"))
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not choices or not isinstance(choices, list):
        missing = "choices"
    elif not isinstance(prompt, int) or not isinstance(completion, int):
        missing = "token usage"
    else:
        missing = None
    if missing:
        raise ProviderError(
            "malformed_response", f"{where['model']}: the answer has no {missing}",
            retryable=True, **where,
        )  # fmt: skip
    choice = _mapping(choices[0])
    message = _mapping(choice.get("message"))
    text, calls = message.get("content"), message.get("tool_calls")
    tool_calls: list[dict[str, str]] = []
    for call in map(_mapping, calls if isinstance(calls, list) else []):
        function = _mapping(call.get("function"))
        tool_calls.append(
            {
                "id": str(call.get("id") or ""),
                "name": str(function.get("name") or ""),
                "arguments": str(function.get("arguments") or ""),
            }
        )
    return Answer(
        text if isinstance(text, str) else "",
        prompt,
        completion,
        choice.get("finish_reason"),
        False,
        tool_calls,
    )


def _mapping(value: Any) -> Mapping[str, Any]:
    """``value`` if it is a JSON object, else an empty one (a malformed part reads as
    absent)."""
    return value if isinstance(value, dict) else {}


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
    where: dict[str, str],
    begun: float,
    info: Attempt,
    *,
    error: ProviderError | None = None,
    charge: Charge | None = None,
) -> dict[str, Any]:
    """One attempt as the job's history shows it: JSON, and nothing that could hold a key
    (no request, no response body)."""
    record: dict[str, Any] = {**where, "status": "ok" if error is None else "error"}
    if error is not None:
        record["error_code"] = error.code
        if error.http_status is not None:
            record["http_status"] = error.http_status
        if error.retry_after is not None:
            record["retry_after"] = error.retry_after
    record["latency_ms"] = _ms_since(begun)
    record["attempt"] = info.number
    metrics.provider_attempt(record)
    if info.stream:
        record["stream"] = True
    if info.probe:
        record["probe"] = True
    if charge is not None and (error is not None or charge.estimated):
        record["charged"] = {
            "prompt_tokens": charge.prompt_tokens,
            "completion_tokens": charge.completion_tokens,
            "cost": str(charge.cost),
            "estimated": charge.estimated,
        }
    return record


def _ms_since(start: float) -> int:
    return int((time.monotonic() - start) * 1000)


def _detail(exc: DomainError) -> str:
    details = exc.details if isinstance(exc.details, list) else []
    return "; ".join(str(d.get("message")) for d in details if isinstance(d, dict)) or exc.message
