"""Server-Sent Events: ``GET /jobs/{id}/stream`` and each kind's ``/stream``.

Replays the event rows after ``Last-Event-ID`` (or ``?after=N``), then follows the job
live until its terminal event and an ``end`` message with the finished job; ``id:`` is the
event number, a comment heartbeat keeps idle connections open. Auth, tenancy (another
organization's job is a 404 before any byte) and rate limits are the REST ones, plus a
cap on open streams per user.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

from flask import Response, request
from flask.views import MethodView
from flask_smorest import Blueprint

from api.security import requires, sessions, stream_principal
from api.streams.schemas import StreamArgsSchema, TaskSSE, job_sse
from models import JobKind
from orchestration import streams
from orchestration.errors import field_error

blp = Blueprint(
    "streams", __name__, url_prefix="/api/v1", description="Live job progress (Server-Sent Events)"
)

SSE_DOC = {
    "responses": {
        "200": {
            "description": "text/event-stream: one message per event row (``id:`` = its "
            "number), ``step.delta`` messages with streamed text, ``end`` with the job",
            "content": {"text/event-stream": {"schema": {"type": "string"}}},
        }
    }
}


class ClosingStream:
    """The response body: releases the client's stream slot when the server closes it,
    whether or not the body was ever iterated (a client gone before the first byte)."""

    def __init__(self, chunks: Iterator[bytes], release: Callable[[], None]) -> None:
        self.chunks, self.release, self.closed = chunks, release, False

    def __iter__(self) -> Iterator[bytes]:
        return self.chunks

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            close = getattr(self.chunks, "close", None)
            if close is not None:
                close()
            self.release()


def _after(args: dict) -> int:
    if "after" in args:
        return args["after"]
    header = request.headers.get("Last-Event-ID", "").strip()
    if not header:
        return 0
    if not header.isdigit():
        raise field_error("Last-Event-ID", "must be an event number")
    return int(header)


def event_stream(
    job_id: uuid.UUID, args: dict, kind: JobKind | None, encode: Callable | None = None
) -> Response:
    """Open the stream (404s and 429s answered here, before any byte), then send it."""
    principal = stream_principal()
    after = _after(args)
    stream = streams.open_job_stream(
        sessions(), principal=principal, job_id=job_id, after=after, kind=kind
    )
    streams.connections.acquire(principal.user_id)
    encode = encode or job_sse

    def chunks() -> Iterator[bytes]:
        yield b"retry: 2000\n\n"
        for item in stream:
            text = encode(item)
            if text:
                yield text.encode()

    body = ClosingStream(chunks(), lambda: streams.connections.release(principal.user_id))
    return Response(
        body,
        mimetype="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
        direct_passthrough=True,
    )


@blp.route("/jobs/<uuid:job_id>/stream")
class JobStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, job_id: uuid.UUID):
        """Follow any job: its events from ``Last-Event-ID`` on, live, to the end."""
        return event_stream(job_id, args, None)


@blp.route("/tasks/<uuid:job_id>/stream")
class TaskStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, job_id: uuid.UUID):
        """Seed 000's task stream: ``{"progress", "status", "message"}``, last with ``result``."""
        return event_stream(job_id, args, JobKind.TASK, TaskSSE())


@blp.route("/builds/<uuid:job_id>/stream")
class BuildStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, job_id: uuid.UUID):
        """Follow a build (the generic event stream)."""
        return event_stream(job_id, args, JobKind.BUILD)


@blp.route("/analyses/<uuid:job_id>/stream")
class AnalysisStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, job_id: uuid.UUID):
        """Follow an analysis (the generic event stream)."""
        return event_stream(job_id, args, JobKind.ANALYSIS)


@blp.route("/orchestrations/<uuid:job_id>/stream")
class OrchestrationStream(MethodView):
    @requires("job:read", authenticate=stream_principal)
    @blp.arguments(StreamArgsSchema, location="query")
    @blp.doc(**SSE_DOC)
    def get(self, args, job_id: uuid.UUID):
        """Follow an orchestration run (the generic event stream)."""
        return event_stream(job_id, args, JobKind.ORCHESTRATION)
