"""ProviderError and the classification of SDK exceptions into retryable or not."""

from __future__ import annotations

from typing import Any

import httpx
import openai


class ProviderError(Exception):
    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        provider: str | None = None,
        model: str | None = None,
        http_status: int | None = None,
        retry_after: float | None = None,
        attempts: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.retryable = retryable
        self.provider = provider
        self.model = model
        self.http_status = http_status
        self.retry_after = retry_after
        self.attempts = attempts or []


def _retry_after(response: httpx.Response | None) -> float | None:
    if response is None:
        return None
    value = response.headers.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


def classify(exc: Exception, *, provider: str, model: str) -> ProviderError:
    """Map an SDK exception to a ProviderError. Messages never include request headers."""
    where = {"provider": provider, "model": model}
    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return ProviderError(
            "timeout", "the provider did not answer in time", retryable=True, **where
        )
    if isinstance(exc, openai.APIConnectionError):
        return ProviderError(
            "connection_error", "could not reach the provider", retryable=True, **where
        )
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        detail = _safe_detail(exc)
        common = {"http_status": status, "retry_after": _retry_after(exc.response), **where}
        if status == 429:
            return ProviderError("rate_limited", detail or "rate limited", retryable=True, **common)
        if status >= 500:
            return ProviderError(
                "server_error", detail or f"provider error {status}", retryable=True, **common
            )
        if status in (401, 403):
            return ProviderError(
                "auth_error", "the provider refused the credentials", retryable=False, **common
            )
        if status == 404:
            return ProviderError(
                "not_found", detail or "model or endpoint not found", retryable=False, **common
            )
        if status == 400 and "context" in (detail or "").lower():
            return ProviderError("context_too_long", detail, retryable=False, **common)
        return ProviderError(
            "bad_request",
            detail or f"provider refused the request ({status})",
            retryable=False,
            **common,
        )
    if isinstance(exc, (ValueError, KeyError, TypeError, AttributeError, IndexError)):
        # The SDK could not parse the body: a broken answer, worth another attempt.
        return ProviderError(
            "malformed_response",
            f"unreadable provider answer ({type(exc).__name__})",
            retryable=True,
            **where,
        )
    return ProviderError("provider_error", f"{type(exc).__name__}", retryable=False, **where)


def _safe_detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        error = body.get("error", body)
        if isinstance(error, dict) and isinstance(error.get("message"), str):
            return error["message"][:300]
    return ""
