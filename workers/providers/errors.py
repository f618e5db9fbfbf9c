"""ProviderError, and the classification of SDK exceptions into retryable or not.

Every message built here goes through ``redact``: upstream error bodies can echo a key
(some servers quote the Authorization header back), and these messages end up in job
history, attempt lists and logs.
"""

from __future__ import annotations

import email.utils
import json
import re
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx
import openai
import pydantic

DETAIL_CHARS = 300

# Key-shaped tokens (OpenAI "sk-...", Groq "gsk_...") and bearer credentials, as a net
# under the exact-match redaction of the keys Baton knows.
_KEY_PATTERN = re.compile(r"\b(?:sk|gsk)[-_][A-Za-z0-9_\-]{6,}|(?i:bearer)\s+[^\s'\",]+")


class ProviderError(Exception):
    """A provider call that failed. ``str(exc)`` is ``"<code>: <message>"``."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool = False,
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
        self.attempts: list[dict[str, Any]] = attempts if attempts is not None else []
        self.skipped: list[dict[str, Any]] = []  # providers passed over without a call
        self.providers_tried: list[str] = []

    @property
    def counts_against_provider(self) -> bool:
        """Does this failure say the provider is unhealthy (for its circuit breaker)?
        The retryable ones do (5xx, 429, timeouts, connection errors, cut streams,
        malformed answers); a 4xx of our own making, a missing key or a refusal does not."""
        return self.retryable

    @property
    def falls_back(self) -> bool:
        """Should the step move on to the next provider of the agent's list? Yes when this
        provider cannot answer (retries spent, breaker open, no usable key, the model is
        not there); no when the request itself is at fault (it would fail anywhere)."""
        return self.retryable or self.code in FALLBACK_CODES

    def __reduce__(self) -> tuple[Any, ...]:
        # Exception pickling replays ``args`` into __init__; ours are keyword attributes.
        return (self.__class__, (self.code, self.message), self.__dict__)


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    for secret in secrets:
        if secret and len(secret) >= 4:
            text = text.replace(secret, "[redacted]")
    return _KEY_PATTERN.sub("[redacted]", text)


def parse_retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds to wait from ``retry-after-ms``/``retry-after`` (seconds or an HTTP date)."""
    if not headers:
        return None
    if (millis := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(millis) / 1000)
        except ValueError:
            pass
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


FALLBACK_CODES = frozenset(
    {"circuit_open", "missing_api_key", "auth_error", "not_found", "unpriced_model"}
)

# (code, retryable) by HTTP status; 408/409 are transient, as the SDK itself treats them.
_STATUS_CODES: dict[int, tuple[str, bool]] = {
    400: ("bad_request", False),
    401: ("auth_error", False),
    403: ("auth_error", False),
    404: ("not_found", False),
    408: ("timeout", True),
    409: ("conflict", True),
    413: ("bad_request", False),
    422: ("bad_request", False),
    429: ("rate_limited", True),
}


def classify(
    exc: BaseException,
    *,
    provider: str,
    model: str,
    secrets: Iterable[str] = (),
    mid_stream: bool = False,
) -> ProviderError | None:
    """Map an SDK (or body-parsing) exception to a ProviderError; None if it is not one.
    ``mid_stream``: raised while reading a stream the provider had started answering.

    Unknown exceptions are left alone on purpose: a bug in Baton should surface as a bug,
    not as a retried "provider error".
    """
    secrets = tuple(secrets)
    where: dict[str, Any] = {"provider": provider, "model": model}

    def error(code: str, what: str, retryable: bool, **extra: Any) -> ProviderError:
        message = redact(f"{model}: {what}", secrets)
        return ProviderError(code, message, retryable=retryable, **where, **extra)

    if isinstance(exc, ProviderError):
        return exc
    if isinstance(exc, openai.APITimeoutError):
        return error("timeout", "the provider did not answer in time", True)
    if isinstance(exc, openai.APIConnectionError | httpx.TransportError) and mid_stream:
        return error("stream_cut", "the connection closed before the answer was complete", True)
    if isinstance(exc, openai.APIConnectionError):
        return error("connection_error", "could not reach the provider", True)
    if isinstance(exc, openai.APIResponseValidationError):
        return error("malformed_response", "the answer did not match the API schema", True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        code, retryable = _STATUS_CODES.get(
            status, ("server_error", True) if status >= 500 else ("client_error", False)
        )
        detail = _detail(exc)
        what = f"HTTP {status}" + (f": {detail}" if detail else "")
        return error(
            code,
            what,
            retryable,
            http_status=status,
            retry_after=parse_retry_after(exc.response.headers),
        )
    if isinstance(exc, openai.APIError):
        # An error event in the middle of a stream (the SDK raises it while iterating).
        return error("stream_error", "the provider reported an error mid-stream", True)
    if isinstance(exc, httpx.TimeoutException):
        # Raised by the SDK's stream iterator, which does not wrap transport errors.
        return error("timeout", "the provider stopped sending in time", True)
    if isinstance(exc, httpx.TransportError):
        return error("connection_error", "the connection to the provider failed", True)
    if isinstance(exc, json.JSONDecodeError | pydantic.ValidationError):
        # A 200 whose body is not the JSON it claims to be: worth another attempt.
        return error("malformed_response", f"unreadable answer ({type(exc).__name__})", True)
    if isinstance(exc, openai.OpenAIError):
        return error("provider_error", type(exc).__name__, False)
    return None


def _detail(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and isinstance(inner.get("message"), str):
            return inner["message"][:DETAIL_CHARS]
    if isinstance(body, str):
        return body[:DETAIL_CHARS]
    return ""
