"""A tiny OpenAI-compatible HTTP server on 127.0.0.1, reached over real TCP by the SDK
(in the test process, in worker processes, in the benchmark).

It answers from a script of entries and repeats the last one. An entry is
``(status, headers, payload)`` or ``(status, headers, payload, delay_seconds)``; the
payload is a dict, a callable of the request body, or a ``Stream`` (server-sent events
with chunked transfer encoding, optionally cut off midway like a crashed server).
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

RATE_LIMITED = {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}
SERVER_ERROR = {"error": {"message": "The server had an error", "type": "server_error"}}
ANSWER = "Hello from 127.0.0.1.\nScore: 7.5/10"
USAGE = {"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30}


def completion_body(request: dict[str, Any], text: str = ANSWER) -> dict[str, Any]:
    return {
        "id": "chatcmpl-local",
        "object": "chat.completion",
        "created": 1_700_000_000,
        "model": request.get("model", "local"),
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": dict(USAGE),
    }


@dataclass
class Stream:
    """An SSE answer: ``pieces`` of text, then a finish chunk and (if asked for) usage.
    ``cut_after``: close the connection after that many pieces, mid-body."""

    pieces: list[str]
    usage: dict[str, int] | None = None
    cut_after: int | None = None
    delay: float = 0.0  # between pieces

    def events(self, request: dict[str, Any]) -> list[bytes]:
        base = {"id": "chatcmpl-local", "object": "chat.completion.chunk", "created": 1}
        base["model"] = request.get("model", "local")
        include_usage = bool((request.get("stream_options") or {}).get("include_usage"))

        def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
            return base | {"choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}

        out = [chunk({"role": "assistant", "content": ""})]
        out += [chunk({"content": piece}) for piece in self.pieces]
        out.append(chunk({}, "stop"))
        if include_usage and self.usage is not None:
            out.append(base | {"choices": [], "usage": self.usage})
        return [f"data: {json.dumps(c)}\n\n".encode() for c in out] + [b"data: [DONE]\n\n"]


Entry = tuple[Any, ...]


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its own timeout) closed the socket: not an error here.
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


class FakeOpenAI:
    """A tiny OpenAI-compatible server: answers from a script, then repeats the last line."""

    def __init__(self, script: list[Entry]) -> None:
        self.script = script
        self.requests: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # chunked streams need it
            # Headers and body are separate writes: without TCP_NODELAY, Nagle and the
            # client's delayed ACK add ~40 ms to every keep-alive answer.
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                owner.requests.append(
                    {
                        "path": self.path,
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                    }
                )
                entry = owner.script[min(len(owner.requests), len(owner.script)) - 1]
                status, headers, payload = entry[:3]
                if len(entry) > 3 and entry[3]:
                    time.sleep(entry[3])
                if isinstance(payload, Stream):
                    self._stream(status, headers, payload, body)
                    return
                data = json.dumps(payload(body) if callable(payload) else payload).encode()
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                # The client may have given up (its timeout): nothing left to answer.
                with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                    self.wfile.write(data)

            def _stream(
                self, status: int, headers: dict[str, str], stream: Stream, body: dict
            ) -> None:
                self.send_response(status)
                self.send_header("content-type", "text/event-stream")
                self.send_header("transfer-encoding", "chunked")
                for name, value in headers.items():
                    self.send_header(name, value)
                self.end_headers()
                events = stream.events(body)
                try:
                    for index, event in enumerate(events):
                        # event 0 is the role chunk; pieces are events 1..n
                        if stream.cut_after is not None and index == stream.cut_after + 1:
                            self.wfile.flush()
                            self.close_connection = True
                            return  # no terminating chunk: the client sees a cut body
                        if stream.delay and index:
                            time.sleep(stream.delay)
                        self.wfile.write(f"{len(event):x}\r\n".encode() + event + b"\r\n")
                        self.wfile.flush()
                    self.wfile.write(b"0\r\n\r\n")
                except (BrokenPipeError, ConnectionResetError):
                    self.close_connection = True

            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

        self.server = _Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self.thread.start()
        self.base_url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


ScriptFactory = Callable[[list[Entry]], FakeOpenAI]
