"""The ``sim`` provider: a deterministic, offline OpenAI-compatible server as an httpx
transport under the real ``openai`` SDK.

Model names choose the behaviour: ``echo`` (instant), ``slow`` (~1 s), ``flaky`` (429 with
Retry-After twice per prompt, then success), ``error`` (500), ``timeout`` (never answers in
time), ``malformed`` (a broken body). Answers carry token usage like a real server.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
import time
import uuid
from typing import Any

import httpx

SLOW_SECONDS = 1.0
_flaky_counts: dict[str, int] = {}
_flaky_lock = threading.Lock()


def count_tokens(text: str) -> int:
    """About four characters a token, like the usual BPE tokenizers on English."""
    return max(1, math.ceil(len(text) / 4)) if text else 0


def _digest(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()


def reply_text(messages: list[dict[str, Any]], model: str) -> str:
    last_user = next(
        (m.get("content") or "" for m in reversed(messages) if m.get("role") == "user"), ""
    )
    digest = _digest(messages)
    score = 5 + int(digest[:4], 16) % 50 / 10  # 5.0 .. 9.9, stable per prompt
    quoted = " ".join(str(last_user).split())[:160]
    return (
        f"[{model}] Simulated answer to: {quoted}\n"
        f"- Finding {digest[:6]}: the request was understood and addressed step by step.\n"
        f"- Recommendation {digest[6:12]}: keep the work small, tested and reviewed.\n"
        f"Score: {score:.1f}/10"
    )


class SimTransport(httpx.BaseTransport):
    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if not request.url.path.endswith("/chat/completions"):
            return httpx.Response(
                404, json={"error": {"message": "not found", "type": "invalid_request_error"}}
            )
        body = json.loads(request.content or b"{}")
        model = str(body.get("model", "echo")).removeprefix("sim/")
        messages = body.get("messages") or []
        if model == "slow":
            time.sleep(SLOW_SECONDS)
        elif model == "error":
            return httpx.Response(
                500, json={"error": {"message": "simulated server error", "type": "server_error"}}
            )
        elif model == "timeout":
            timeout = (request.extensions.get("timeout") or {}).get("read") or 0.2
            time.sleep(min(float(timeout), 0.2))
            raise httpx.ReadTimeout("simulated timeout", request=request)
        elif model == "malformed":
            return httpx.Response(
                200,
                content=b'{"id": "broken", "choices": [',
                headers={"content-type": "application/json"},
            )
        elif model == "flaky":
            key = _digest(messages)
            with _flaky_lock:
                seen = _flaky_counts.get(key, 0)
                _flaky_counts[key] = seen + 1
            if seen < 2:
                return httpx.Response(
                    429,
                    headers={"retry-after": "0"},
                    json={"error": {"message": "simulated rate limit", "type": "rate_limit_error"}},
                )
        elif model not in ("echo", "slow", "flaky"):
            return httpx.Response(
                404,
                json={
                    "error": {
                        "message": f"model {model} not found",
                        "type": "invalid_request_error",
                    }
                },
            )
        return httpx.Response(200, json=self._completion(body, model, messages))

    @staticmethod
    def _completion(
        body: dict[str, Any], model: str, messages: list[dict[str, Any]]
    ) -> dict[str, Any]:
        text = reply_text(messages, f"sim/{model}")
        prompt_tokens = sum(count_tokens(str(m.get("content") or "")) + 4 for m in messages)
        limit = int(body.get("max_tokens") or body.get("max_completion_tokens") or 1_000_000)
        finish = "stop"
        if count_tokens(text) > limit:
            text, finish = text[: limit * 4], "length"
        return {
            "id": f"chatcmpl-sim-{uuid.uuid4().hex[:12]}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": f"sim/{model}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": count_tokens(text),
                "total_tokens": prompt_tokens + count_tokens(text),
            },
        }
