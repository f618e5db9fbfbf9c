"""The shapes of live messages on each transport, and the presenters that fill them.

A live message is shared by every client following its job, so each encoding is made
once per message (``LiveMessage.encoded``), not once per client.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from marshmallow import Schema, fields, validate

from api.jobs.schemas import JobSchema, present_job
from orchestration.streams import StreamItem


class StreamArgsSchema(Schema):
    after = fields.Integer(
        validate=validate.Range(min=0),
        metadata={"description": "resume after this event number (as Last-Event-ID does)"},
    )
    token = fields.String(metadata={"description": "access token, for clients without headers"})


class StreamEventSchema(Schema):
    """An event row as the generic stream sends it (``id:`` is ``seq``)."""

    seq = fields.Integer()
    type = fields.String()
    job_id = fields.String()
    data = fields.Dict()
    timestamp = fields.String()
    status = fields.String(allow_none=True)
    progress = fields.Integer(allow_none=True)


class StreamDeltaSchema(Schema):
    """Streamed text as the provider generates it (not an event row: no ``id:``)."""

    type = fields.String()
    job_id = fields.String()
    step_id = fields.String()
    phase = fields.String()
    step = fields.String()
    attempt = fields.Integer()
    index = fields.Integer()
    delta = fields.String()
    output_chars = fields.Integer()


class StreamEndSchema(JobSchema):
    """The finished job (its result, tokens and cost), without the history just sent."""

    class Meta:
        exclude = ("history", "history_next")


class TaskStreamSchema(Schema):
    """Seed 000's ``GET /tasks/:id/stream`` data line, plus the event it came from."""

    progress = fields.Integer(allow_none=True)
    status = fields.String()
    message = fields.String()
    result = fields.Raw(allow_none=True)
    error = fields.String(allow_none=True)
    delta = fields.String()
    event = fields.String()
    seq = fields.Integer()


class BuildFrameSchema(Schema):
    """Seed 004's WebSocket frames: connected, progress, completion, error."""

    type = fields.String(validate=validate.OneOf(["connected", "progress", "completion", "error"]))
    task_id = fields.String()
    message = fields.String()
    status = fields.String()
    progress = fields.Integer(allow_none=True)
    timestamp = fields.String()
    data = fields.Dict()
    results = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    seq = fields.Integer()
    event = fields.String()


_EVENT = StreamEventSchema()
_DELTA = StreamDeltaSchema()
_END = StreamEndSchema()
_TASK = TaskStreamSchema()
_FRAME = BuildFrameSchema()

JOB_STATUS_BY_EVENT = {
    "job.queued": "queued",
    "job.requeued": "queued",
    "job.running": "running",
    "job.paused": "paused",
    "job.completed": "completed",
    "job.failed": "failed",
    "job.cancelled": "cancelled",
}


def _dumps(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), default=str)


def event_body(body: dict[str, Any]) -> dict[str, Any]:
    data = body.get("data") or {}
    return _EVENT.dump(
        {
            "seq": body["seq"],
            "type": body["event"],
            "job_id": body["job_id"],
            "data": data,
            "timestamp": body["created_at"],
            "status": body.get("status") or JOB_STATUS_BY_EVENT.get(body["event"]),
            "progress": body.get("progress", data.get("progress")),
        }
    )


def end_body(item: StreamItem) -> dict[str, Any]:
    return _END.dump(present_job(item.detail)) if item.detail is not None else {}


def describe(event: str, data: dict[str, Any]) -> str:
    """A line a person reads: "Phase 'Design' completed", "Job failed: ..."."""
    noun, _, verb = event.partition(".")
    if noun == "job":
        return f"Job {verb}" + (f": {data['error']}" if data.get("error") else "")
    if noun in ("phase", "step"):
        name = data.get(noun) or data.get("phase") or ""
        via = f" with {data['model']}" if noun == "step" and data.get("model") else ""
        return f"{noun.capitalize()} '{name}' {verb}{via}"
    if noun == "provider":
        return f"Provider {data.get('provider', '')} {data.get('status', verb)}".strip()
    if noun == "budget_alert":
        return data.get("message") or "Budget alert"
    return event


# -- SSE ------------------------------------------------------------------------------------


def sse(data: str, *, event: str | None = None, id: int | None = None) -> str:
    head = (f"id: {id}\n" if id is not None else "") + (f"event: {event}\n" if event else "")
    return head + "".join(f"data: {line}\n" for line in data.split("\n")) + "\n"


def _sse_event(body: dict[str, Any]) -> str:
    return sse(_dumps(event_body(body)), event=body["event"], id=body["seq"])


def _sse_delta(body: dict[str, Any]) -> str:
    return sse(_dumps(_DELTA.dump(body)), event="step.delta")


def job_sse(item: StreamItem) -> str:
    """The generic stream (``/jobs/{id}/stream`` and the build, analysis and orchestration
    ones): each event row under its type, deltas as ``step.delta``, then ``end``."""
    if item.kind == "event":
        return item.message.encoded("sse", _sse_event)
    if item.kind == "delta":
        return item.message.encoded("sse", _sse_delta)
    if item.kind == "heartbeat":
        return ": heartbeat\n\n"
    if item.kind == "end":
        return sse(_dumps(end_body(item)), event="end")
    return sse(
        _dumps({"reason": "the client fell behind; resume with Last-Event-ID"}), event="dropped"
    )


class TaskSSE:
    """Seed 000's task stream: ``{"progress", "status", "message"}`` lines, the last one
    with ``result``. Stateful per client (the terminal line waits for the result)."""

    def __init__(self) -> None:
        self.last_seq: int | None = None

    def __call__(self, item: StreamItem) -> str:
        if item.kind == "event":
            body = item.body
            self.last_seq = body["seq"]
            if body["event"] in ("job.completed", "job.failed", "job.cancelled"):
                return ""  # sent with the result, at "end"
            status = JOB_STATUS_BY_EVENT.get(body["event"], "executing")
            line = {
                "progress": item.progress,
                "status": {"queued": "initializing", "running": "executing"}.get(status, status),
                "message": describe(body["event"], body.get("data") or {}),
                "event": body["event"],
                "seq": body["seq"],
            }
            return sse(_dumps(_TASK.dump(line)), id=body["seq"])
        if item.kind == "delta":
            line = {"progress": item.progress, "status": "executing", "delta": item.body["delta"],
                    "message": f"Streaming {item.body.get('step', '')}".strip(), "event": "step.delta"}  # fmt: skip
            return sse(_dumps(_TASK.dump(line)))
        if item.kind == "end" and item.detail is not None:
            job = item.detail.job
            result = job.result or {}
            line = {
                "progress": job.progress if job.status != "completed" else 100,
                "status": job.status,
                "message": describe(f"job.{job.status}", {"error": job.error}),
                "result": result.get("output", result) if job.status == "completed" else None,
                "error": job.error,
                "event": f"job.{job.status}",
            }
            if self.last_seq is not None:
                line["seq"] = self.last_seq
            return sse(_dumps(_TASK.dump(line)), id=self.last_seq)
        return job_sse(item) if item.kind in ("heartbeat", "dropped") else ""


# -- WebSocket frames -------------------------------------------------------------------------


class BuildFrames:
    """Seed 004's frames for ``/api/ws/build/{id}`` and ``/api/ws/analysis/{id}``."""

    def __init__(
        self,
        job_id: str,
        what: str,
        status_word: Callable[[str], str] = str,
        results: Callable[[dict[str, Any]], dict[str, Any]] = dict,
    ) -> None:
        self.job_id, self.what, self.word, self.results = job_id, what, status_word, results
        self.status = "queued"
        self.current_step: str | None = None
        self.files = 0

    def connected(self, timestamp: str) -> str:
        return _dumps(
            _FRAME.dump(
                {"type": "connected", "task_id": self.job_id, "timestamp": timestamp,
                 "message": f"Connected to {self.what} updates"}
            )
        )  # fmt: skip

    def __call__(self, item: StreamItem, timestamp: str) -> str | None:
        frame: dict[str, Any]
        if item.kind == "event":
            body = item.body
            data = body.get("data") or {}
            self.status = JOB_STATUS_BY_EVENT.get(body["event"], self.status)
            if body["event"] == "job.queued":
                self.status = "queued"
            elif not body["event"].startswith("job."):
                self.status = "running"
            self.current_step = data.get("step") or data.get("phase") or self.current_step
            if body["event"] == "step.completed" and data.get("step", "").startswith("generate"):
                self.files += 1
            if body["event"] in ("job.completed", "job.failed", "job.cancelled"):
                return None  # the completion or error frame follows, at "end"
            frame = {
                "type": "progress", "task_id": self.job_id, "status": self.word(self.status),
                "progress": item.progress, "timestamp": body["created_at"], "seq": body["seq"],
                "event": body["event"],
                "data": {"current_step": describe(body["event"], data), "files_created": self.files, **data},
            }  # fmt: skip
        elif item.kind == "delta":
            body = item.body
            frame = {
                "type": "progress", "task_id": self.job_id, "status": "running",
                "progress": item.progress, "timestamp": timestamp, "event": "step.delta",
                "data": {"current_step": body.get("step"), "phase": body.get("phase"),
                         "delta": body.get("delta"), "attempt": body.get("attempt"),
                         "index": body.get("index")},
            }  # fmt: skip
        elif item.kind == "end" and item.detail is not None:
            job = item.detail.job
            if job.status == "completed":
                frame = {"type": "completion", "task_id": self.job_id, "status": "completed",
                         "timestamp": timestamp, "results": self.results(job.result or {}), "progress": 100}  # fmt: skip
            else:
                frame = {"type": "error", "task_id": self.job_id, "status": self.word(job.status),
                         "timestamp": timestamp, "error": job.error or f"The {self.what} was {job.status}"}  # fmt: skip
        else:
            return None
        return _dumps(_FRAME.dump(frame))


def ws_event_frame(item: StreamItem) -> str | None:
    """Seed 002's ``/api/v1/ws`` frames for a subscribed job: ``event``, ``delta``, ``end``."""
    if item.kind == "event":
        return item.message.encoded(
            "ws", lambda b: _dumps({**event_body(b), "type": "event", "event": b["event"]})
        )
    if item.kind == "delta":
        return item.message.encoded("ws", lambda b: _dumps(_DELTA.dump({**b, "type": "delta"})))
    if item.kind == "end":
        body = end_body(item)
        return _dumps({"type": "end", "job_id": str(body.get("id")), "job": body})
    return None
