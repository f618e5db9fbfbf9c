"""The ``sim`` provider: a deterministic, offline OpenAI-compatible server, as an httpx
transport under the real ``openai`` SDK (so requests, errors and parsing take the same
path as a real provider's).

The model name chooses the behaviour: ``echo`` (instant), ``slow`` (~1 s), ``flaky`` (429
with ``Retry-After: 0`` twice per prompt, then success), ``error`` (500), ``timeout``
(never answers in time), ``malformed`` (a 200 with a broken JSON body), ``slow-stream``
(streams its chunks ~0.1 s apart; unstreamed, answers after the same total time) and
``cut-stream`` (the connection drops after half of the chunks; unstreamed, after half the
body). The ``X-Baton-Sim-Fault`` request header, set from a job's ``sim_fault`` setting,
picks the behaviour for any sim model. Answers quote the prompt, end with a
``Score: X.Y/10`` line and carry token usage like a real server; a prompt asking for a
security analysis's findings or a test phase's figures (orchestration/plans.py) gets
them in its format.

Offered ``tools``, every sim model emulates a tool-using model (in OpenAI's
``tool_calls`` shape): when the latest message is the user's, it calls ``search`` if the
text starts with ``search:`` and ``calculator`` if it holds an arithmetic expression;
after tool results it answers from them. ``tool-loop`` calls a tool on every turn.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx

from orchestration.model_catalog import SIM_MODELS

QUOTE_CHARS = 160
SLOW_SECONDS = 1.0
TIMEOUT_SECONDS = 0.2  # how long sim/timeout stalls before failing; never longer
FLAKY_FAILURES = 2
CREATED = 1_700_000_000  # a fixed timestamp keeps the whole body deterministic
STREAM_CHUNK_CHARS = 32
SLOW_STREAM_CHUNK_SECONDS = 0.1
FAULT_HEADER = "X-Baton-Sim-Fault"
# A number, then one or more (operator, number) pairs; parentheses allowed around them.
ARITHMETIC = re.compile(
    r"[-(]*\d+(?:\.\d+)?\)*(?:\s*(?:\*\*|//|[-+*/%^])\s*[-(]*\d+(?:\.\d+)?\)*)+"
)
SEARCH_PREFIX = "search:"
TOOL_RESULT_CHARS = 300


def count_tokens(text: str) -> int:
    """About four characters a token, like the usual BPE tokenizers on English."""
    return math.ceil(len(text) / 4)


def message_text(content: Any) -> str:
    """A message's text: a string, or the text parts of a content-part list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(p.get("text", "")) for p in content if isinstance(p, dict) and "text" in p
        )
    return ""


def prompt_digest(messages: list[dict[str, Any]]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True, default=str).encode()).hexdigest()


def reply_text(messages: list[dict[str, Any]], model: str) -> str:
    """The answer to a prompt: same messages and model, same text."""
    last_user = next((m for m in reversed(messages) if m.get("role") == "user"), messages[-1])
    quoted = " ".join(message_text(last_user.get("content")).split())[:QUOTE_CHARS]
    digest = prompt_digest(messages)
    score = (10 + int(digest[:8], 16) % 90) / 10  # 1.0 .. 9.9, stable per prompt
    if tool_results := _tool_results(messages):
        used = "; ".join(
            f"{name} returned {' '.join(result.split())[:TOOL_RESULT_CHARS]}"
            for name, result in tool_results
        )
        return (
            f'Simulated answer from sim/{model}, from its tools. You asked: "{quoted}". '
            f"{used}.\nScore: {score:.1f}/10"
        )
    return (
        f'Simulated answer from sim/{model}. You asked: "{quoted}". '
        f"Reference {digest[:8]}: the request was read in full and answered point by point; "
        f"keep the work small, tested and reviewed.\n"
        f"{_asked_reports(message_text(last_user.get('content')), digest)}"
        f"Score: {score:.1f}/10"
    )


def _asked_reports(prompt: str, digest: str) -> str:
    """The report lines a prompt asks for in Baton's own formats (a security analysis's
    findings, a build test phase's figures: orchestration/plans.py), stable per prompt."""
    out = ""
    if "| severity:" in prompt:
        line = 1 + int(digest[8:12], 16) % 400
        out += (
            f"- Unvalidated input reaches a query | severity: high | line: {line} | "
            "recommendation: Use parameterized queries\n"
        )
    if "'Tests passed: N'" in prompt:
        passed = 1 + int(digest[12:14], 16) % 40
        coverage = 50 + int(digest[14:18], 16) % 500 / 10
        out += f"Tests passed: {passed}\nCoverage: {coverage:.1f}%\n"
    return out


def _offered(tools: Any) -> set[str]:
    names = set()
    for tool in tools if isinstance(tools, list) else []:
        function = tool.get("function") if isinstance(tool, dict) else None
        if isinstance(function, dict) and isinstance(function.get("name"), str):
            names.add(function["name"])
    return names


def arithmetic_in(text: str) -> str | None:
    """The first arithmetic expression in ``text`` (``2500000 * 1.18``), if any."""
    match = ARITHMETIC.search(text)
    return match.group(0).strip() if match else None


def tool_call_for(
    messages: list[dict[str, Any]], tools: Any, model: str
) -> tuple[str, dict[str, Any]] | None:
    """The tool a tool-using model would call now, with its arguments; None: answer."""
    offered = _offered(tools)
    if not offered:
        return None
    if model == "tool-loop":
        if "calculator" in offered:
            return "calculator", {"expression": f"{len(messages)} * 2"}
        return sorted(offered)[0], {"query": "again"}
    if messages[-1].get("role") != "user":
        return None  # tool results are in: answer from them
    text = message_text(messages[-1].get("content")).strip()
    if text.lower().startswith(SEARCH_PREFIX) and "search" in offered:
        rest = text[len(SEARCH_PREFIX) :].strip()
        return "search", {"query": rest.splitlines()[0] if rest else ""}
    # The instruction, not the job input the engine quotes after it (dates, ids).
    expression = arithmetic_in(text.split("\n\nJob input:")[0])
    if expression and "calculator" in offered:
        return "calculator", {"expression": expression}
    return None


def _tool_results(messages: list[dict[str, Any]]) -> list[tuple[str, str]]:
    """(tool name, result) of the tool messages after the last user message."""
    names: dict[str, str] = {}
    results: list[tuple[str, str]] = []
    for message in messages:
        if message.get("role") == "user":
            results = []
        for call in message.get("tool_calls") or []:
            names[str(call.get("id"))] = str((call.get("function") or {}).get("name"))
        if message.get("role") == "tool":
            name = names.get(str(message.get("tool_call_id")), "tool")
            results.append((name, message_text(message.get("content"))))
    return results


def _error(status: int, message: str, kind: str, **headers: str) -> httpx.Response:
    body = {"error": {"message": message, "type": kind, "param": None, "code": None}}
    return httpx.Response(status, json=body, headers=headers)


def _read_timeout(request: httpx.Request) -> float | None:
    timeout = (request.extensions.get("timeout") or {}).get("read")
    return float(timeout) if timeout is not None else None


class SimTransport(httpx.BaseTransport):
    def __init__(self) -> None:
        # Per-process memory, as a real provider's rate limiter would be per account.
        self._flaky_calls: dict[str, int] = {}
        self._lock = threading.Lock()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if request.method == "GET" and path.endswith("/models"):
            data = [{"id": f"sim/{m}", "object": "model", "owned_by": "baton"} for m in SIM_MODELS]
            return httpx.Response(200, json={"object": "list", "data": data})
        if request.method != "POST" or not path.endswith("/chat/completions"):
            return _error(404, f"no route for {request.method} {path}", "invalid_request_error")
        try:
            body = json.loads(request.read() or b"{}")
        except ValueError:
            return _error(400, "the body is not JSON", "invalid_request_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages:
            return _error(400, "'messages' must be a non-empty list", "invalid_request_error")
        model = str(body.get("model", "")).removeprefix("sim/")
        if model not in SIM_MODELS:
            return _error(404, f"the model 'sim/{model}' does not exist", "invalid_request_error")
        behaviour = request.headers.get(FAULT_HEADER) or model
        if behaviour not in SIM_MODELS:
            return _error(400, f"unknown sim fault '{behaviour}'", "invalid_request_error")
        limit = body.get("max_completion_tokens") or body.get("max_tokens")
        if limit is not None and (not isinstance(limit, int) or limit < 1):
            return _error(400, "max_tokens must be a positive integer", "invalid_request_error")

        if fault := self._fault(behaviour, messages, request):
            return fault
        completion = _completion(model, messages, limit, body.get("tools"))
        if body.get("stream"):
            include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _stream(completion, include_usage, behaviour, request)
        if behaviour in ("slow-stream", "cut-stream"):
            data = json.dumps(completion).encode()
            chunks = [data[i : i + 64] for i in range(0, len(data), 64)]
            stream = _ByteStream(chunks, behaviour, request)
            return httpx.Response(200, stream=stream, headers={"content-type": "application/json"})
        return httpx.Response(200, json=completion)

    def _fault(
        self, model: str, messages: list[dict[str, Any]], request: httpx.Request
    ) -> httpx.Response | None:
        read_timeout = _read_timeout(request)
        if model == "slow":
            if read_timeout is not None and read_timeout < SLOW_SECONDS:
                time.sleep(read_timeout)  # a slow server past the client's read timeout
                raise httpx.ReadTimeout("sim: no answer within the read timeout", request=request)
            time.sleep(SLOW_SECONDS)
        elif model == "timeout":
            time.sleep(min(read_timeout or TIMEOUT_SECONDS, TIMEOUT_SECONDS))
            raise httpx.ReadTimeout("sim: no answer within the read timeout", request=request)
        elif model == "error":
            return _error(500, "sim: simulated internal server error", "server_error")
        elif model == "malformed":
            return httpx.Response(
                200,
                content=b'{"id": "chatcmpl-sim-malformed", "choices": [{"message": ',
                headers={"content-type": "application/json"},
            )
        elif model == "flaky":
            key = prompt_digest(messages)
            with self._lock:
                seen = self._flaky_calls.get(key, 0)
                # A cycle, so every fresh call of the same prompt is flaky again.
                self._flaky_calls[key] = (seen + 1) % (FLAKY_FAILURES + 1)
            if seen < FLAKY_FAILURES:
                return _error(
                    429, "sim: rate limit reached", "rate_limit_error", **{"retry-after": "0"}
                )
        return None


def _completion(
    model: str, messages: list[dict[str, Any]], limit: int | None, tools: Any = None
) -> dict[str, Any]:
    prompt_tokens = max(1, count_tokens("".join(message_text(m.get("content")) for m in messages)))
    if call := tool_call_for(messages, tools, model):
        name, arguments = call
        call_id = f"call_{prompt_digest(messages)[:20]}"
        function = {"name": name, "arguments": json.dumps(arguments)}
        message = {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": call_id, "type": "function", "function": function}],
        }
        completion_tokens = count_tokens(json.dumps(message["tool_calls"]))
        return _chat_completion(
            model, messages, message, "tool_calls", prompt_tokens, completion_tokens
        )
    text = reply_text(messages, model)
    finish = "stop"
    if limit is not None and count_tokens(text) > limit:
        text, finish = text[: limit * 4], "length"
    completion_tokens = count_tokens(text)
    message = {"role": "assistant", "content": text}
    return _chat_completion(model, messages, message, finish, prompt_tokens, completion_tokens)


def _chat_completion(
    model: str,
    messages: list[dict[str, Any]],
    message: dict[str, Any],
    finish: str,
    prompt_tokens: int,
    completion_tokens: int,
) -> dict[str, Any]:
    return {
        "id": f"chatcmpl-sim-{prompt_digest(messages)[:24]}",
        "object": "chat.completion",
        "created": CREATED,
        "model": f"sim/{model}",
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": finish,
                "logprobs": None,
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


class _ByteStream(httpx.SyncByteStream):
    """A body sent piece by piece: slowly (``slow-stream``), or cut off half-way
    (``cut-stream``: the peer closes the connection, as a crashed server would)."""

    def __init__(self, chunks: list[bytes], behaviour: str, request: httpx.Request) -> None:
        self.chunks, self.behaviour, self.request = chunks, behaviour, request

    def __iter__(self) -> Iterator[bytes]:
        cut_at = max(1, len(self.chunks) // 2) if self.behaviour == "cut-stream" else None
        pause = SLOW_STREAM_CHUNK_SECONDS if self.behaviour == "slow-stream" else 0.0
        read_timeout = _read_timeout(self.request)
        for index, chunk in enumerate(self.chunks):
            if index == cut_at:
                raise httpx.RemoteProtocolError(
                    "sim: peer closed connection without sending complete message body",
                    request=self.request,
                )
            if pause and index:
                if read_timeout is not None and read_timeout < pause:
                    time.sleep(read_timeout)
                    raise httpx.ReadTimeout(
                        "sim: no chunk within the read timeout", request=self.request
                    )
                time.sleep(pause)
            yield chunk


def _stream(
    completion: dict[str, Any], include_usage: bool, behaviour: str, request: httpx.Request
) -> httpx.Response:
    """The same answer as server-sent ``chat.completion.chunk`` events."""
    choice = completion["choices"][0]
    text = choice["message"].get("content") or ""
    base = {k: completion[k] for k in ("id", "created", "model")} | {
        "object": "chat.completion.chunk"
    }

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        choices = [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}]
        return base | {"choices": choices} | ({"usage": None} if include_usage else {})

    chunks = [chunk({"role": "assistant", "content": ""})]
    chunks += [
        chunk({"content": text[i : i + STREAM_CHUNK_CHARS]})
        for i in range(0, len(text), STREAM_CHUNK_CHARS)
    ]
    chunks.append(chunk({}, choice["finish_reason"]))
    if include_usage:
        chunks.append(base | {"choices": [], "usage": completion["usage"]})
    events = [f"data: {json.dumps(c)}\n\n".encode() for c in chunks] + [b"data: [DONE]\n\n"]
    return httpx.Response(
        200,
        stream=_ByteStream(events, behaviour, request),
        headers={"content-type": "text/event-stream"},
    )
