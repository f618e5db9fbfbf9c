"""Live job output over Redis pub/sub, for the SSE, WebSocket and Socket.IO streams.

Channel ``<BATON_REDIS_PREFIX>:jobs:<job id>:live`` carries two kinds of JSON message:

- every event row, once its transaction commits (``append_event`` queues it on the
  session; ``after_commit`` publishes it), with the job's facts its Socket.IO events
  need (``title`` on ``job.running`` only, the one event that names the task)::

    {"type": "event", "job_id": "...", "seq": 7, "event": "step.completed",
     "data": {...}, "created_at": "2026-...Z", "status": "running", "progress": 40,
     "organization_id": "...", "kind": "orchestration", "agent_id": null}

- every streamed chunk, as the provider sends it (not an event row)::

    {"type": "step.delta", "job_id": "...", "step_id": "...", "phase": "Execution",
     "step": "execution", "attempt": 1, "index": 0, "delta": "Simulated answer",
     "output_chars": 16}

``attempt`` numbers the provider calls of the step (a retried or fallen-back stream starts
again with a new attempt); ``index`` numbers the chunks of an attempt; concatenating the
deltas of one attempt gives its text. Pub/sub is fire-and-forget: the durable record is
the event rows (``step.progress`` carries the streamed text in coarser pieces), so a
stream that misses a message reads the rows instead (see ``orchestration.streams``).

Seed 001's Socket.IO events that stand for an event row (``task_progress``,
``agent_status``, ``error``: ``socketio_events``) are not published by the committing
process: each stream process derives them from the job channel's messages it already
hears and emits them to its own clients (``api.streams.sockets``), so a step publishes
each event once. The others (``budget_alert``, ``emergency_pause``, a conversation's
``message``) are emitted after commit to the organization's (or conversation's) room
through Flask-SocketIO's Redis message queue (python-socketio's ``RedisManager``, the
class Flask-SocketIO uses for ``message_queue=redis://...``), write-only, so workers and
the API emit without a Socket.IO server of their own.

Publishing is best effort: no Redis (embedded mode) or a Redis error never fails a step.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import threading
import time
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from orchestration import redis_store

log = logging.getLogger(__name__)

_WARN_EVERY_SECONDS = 30.0
# How long a process at its exit waits for its sender thread (Redis answers in ms; its
# socket timeout bounds a hung one anyway).
FLUSH_SECONDS = 5.0
_warned_at = 0.0
_PENDING = "baton.live.pending"
_IN_BACKGROUND = "baton.live.in_background"
TERMINAL_EVENTS = frozenset({"job.completed", "job.failed", "job.cancelled"})
# Event types that move a task along for Socket.IO's task_progress (not every token).
PROGRESS_EVENTS = frozenset(
    {"phase.started", "phase.completed", "step.started", "step.completed", "step.failed"}
)
# Seed 001's agent words are idle|working|error: a paused job's agent is idle (the
# event says ``paused: true``).
AGENT_STATUS = {
    "job.running": "working",
    "job.completed": "idle",
    "job.cancelled": "idle",
    "job.paused": "idle",
    "job.failed": "error",
}
# Seed 001's task words (pending|in_progress|...|completed|failed) for a job's status, as
# orchestration.project_work reads a task from its job (a cancelled job's task failed);
# Baton's own word stays in ``job_status``.
TASK_STATUS_WORDS = {
    "pending": "pending",
    "queued": "pending",
    "running": "in_progress",
    "paused": "in_progress",
    "completed": "completed",
    "failed": "failed",
    "cancelled": "failed",
}


def _warn(what: str, exc: Exception) -> None:
    global _warned_at
    now = time.monotonic()
    if now - _warned_at > _WARN_EVERY_SECONDS:
        _warned_at = now
        log.warning("%s not published (redis): %s", what, exc)


def publish(job_id: str, message: dict[str, Any]) -> None:
    channel, payload = redis_store.job_channel(job_id), json.dumps(message, default=str)
    messages = getattr(_batch, "messages", None)
    if messages is not None:  # inside _after_commit: sent with the rest of the commit's
        messages.append((channel, payload))
        return
    client = redis_store.redis_client()
    if client is None:
        return
    _drain()  # after what earlier commits sent in the background
    try:
        client.publish(channel, payload)
    except Exception as exc:
        _warn("live output", exc)


def socketio_channel() -> str:
    """Flask-SocketIO's message-queue channel, under this deployment's prefix."""
    return redis_store.key("socketio")


def organization_room(organization_id: Any) -> str:
    return f"org:{organization_id}"


_emitter_lock = threading.Lock()
_emitter: tuple[int, str, Any] | None = None


def _socketio_emitter() -> Any | None:
    """A write-only Socket.IO emitter per process (re-created after a fork)."""
    global _emitter
    from baton.settings import get_settings

    url = get_settings().redis_url
    if not url:
        return None
    current = _emitter
    if current is not None and current[0] == os.getpid() and current[1] == url:
        return current[2]  # the common case, without the lock
    with _emitter_lock:
        if _emitter is None or _emitter[0] != os.getpid() or _emitter[1] != url:
            manager = _manager_class()(
                url,
                channel=socketio_channel(),
                write_only=True,
                json=_LenientJson,
                redis_options={
                    "socket_timeout": redis_store.SOCKET_TIMEOUT_SECONDS,
                    "socket_connect_timeout": redis_store.SOCKET_TIMEOUT_SECONDS,
                },
            )
            _emitter = (os.getpid(), url, manager)
        return _emitter[2]


_batch = threading.local()


class _LenientJson:
    """The emitter's JSON module (python-socketio's ``json`` option): a value JSON has no
    type for (a UUID, a Decimal, a datetime) is written as its ``str``, as the job
    channel's messages are, so ``emit`` hands its data over as it is instead of copying
    it through a JSON round trip first."""

    @staticmethod
    def dumps(obj: Any, **kwargs: Any) -> str:
        return json.dumps(obj, default=str, **kwargs)

    loads = staticmethod(json.loads)


def _manager_class() -> type:
    """python-socketio's ``RedisManager`` whose publish joins this thread's batch when one
    is open (``_after_commit``), so a commit's emits share one round trip with its events."""
    import socketio

    class BatchingRedisManager(socketio.RedisManager):  # type: ignore[misc]
        def _publish(self, data: Any) -> Any:
            messages = getattr(_batch, "messages", None)
            if messages is None:
                _drain()  # after what earlier commits sent in the background
                return super()._publish(data)
            messages.append((self.channel, self.json.dumps(data)))
            return None

    return BatchingRedisManager


def conversation_room(conversation_id: Any) -> str:
    """Seed 001's ``join_conversation`` room (issue 11)."""
    return f"conversation:{conversation_id}"


def emit(
    event: str, data: dict[str, Any], *, organization_id: Any, room: str | None = None
) -> None:
    """Emit one Socket.IO event to the organization's room (or to ``room``, e.g. a
    conversation's), now (best effort)."""
    emitter = _socketio_emitter()
    if emitter is None:
        return
    try:
        emitter.emit(event, data, room=room or organization_room(organization_id))
    except Exception as exc:
        _warn("socket.io event", exc)


# -- after commit ------------------------------------------------------------------------


def queue_event(session: Session, event: dict[str, Any]) -> None:
    """Publish this event row once the session's transaction commits (never before: a
    stream must not announce a row that a rollback takes back)."""
    _listen_once()
    session.info.setdefault(_PENDING, []).append(("event", event))


def emit_after_commit(
    session: Session,
    event: str,
    data: dict[str, Any],
    *,
    organization_id: Any,
    room: str | None = None,
) -> None:
    """Emit a Socket.IO event once the session's transaction commits."""
    _listen_once()
    session.info.setdefault(_PENDING, []).append(("socketio", (event, data, organization_id, room)))


_listening = False


def _listen_once() -> None:
    global _listening
    if not _listening:
        sa.event.listen(Session, "after_commit", _after_commit)
        sa.event.listen(Session, "after_rollback", _after_rollback)
        _listening = True


def send_in_background(session: Session) -> None:
    """Let this transaction's messages go out from this process's sender thread after its
    commit, so the caller goes on without waiting for Redis's answer (the step engine's
    claim: its step.started need not hold up the provider call). Order is kept within the
    process: anything published later by it (the next commit's messages, a streamed chunk)
    first waits for these to be sent."""
    _listen_once()
    session.info[_IN_BACKGROUND] = True


def _after_rollback(session: Session) -> None:
    session.info.pop(_PENDING, None)
    session.info.pop(_IN_BACKGROUND, None)


def _after_commit(session: Session) -> None:
    """Publish what the committed transaction queued — its event rows on the job channels
    and their Socket.IO emits — in order, in one pipelined round trip to Redis (from the
    sender thread if the transaction asked for it: ``send_in_background``)."""
    in_background = session.info.pop(_IN_BACKGROUND, False)
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    _batch.messages = messages = []
    try:
        for kind, item in pending:
            try:
                if kind == "event":
                    _publish_event(item)
                else:
                    event, data, organization_id, room = item
                    emit(event, data, organization_id=organization_id, room=room)
            except Exception:  # the commit happened; a failed announcement must not undo it
                log.exception("publishing a live %s failed", kind)
    finally:
        _batch.messages = None
    if in_background and messages and redis_store.redis_client() is not None:
        _sender().put(messages)
        return
    _drain()
    _send(messages)


_sender_lock = threading.Lock()
_sender_queue: tuple[int, queue.Queue[list[tuple[str, str]]]] | None = None


def _sender() -> queue.Queue[list[tuple[str, str]]]:
    """This process's queue of batches for its sender thread (started on first use, again
    after a fork: a forked child has no thread of its parent's)."""
    global _sender_queue
    with _sender_lock:
        if _sender_queue is None or _sender_queue[0] != os.getpid():
            batches: queue.Queue[list[tuple[str, str]]] = queue.Queue()
            threading.Thread(
                target=_send_batches, args=(batches,), name="baton-live", daemon=True
            ).start()
            _sender_queue = (os.getpid(), batches)
            # A daemon thread dies with its process: what it holds goes out first (a
            # Celery prefork child, which skips atexit, calls ``flush`` on its shutdown).
            atexit.register(flush)
        return _sender_queue[1]


def _send_batches(batches: queue.Queue[list[tuple[str, str]]]) -> None:
    while True:
        messages = batches.get()
        try:
            _send(messages)
        finally:
            batches.task_done()


def _drain() -> None:
    """Wait until the sender thread has sent every batch queued so far (at once if none)."""
    current = _sender_queue
    if current is not None and current[0] == os.getpid():
        current[1].join()


def flush(timeout: float = FLUSH_SECONDS) -> bool:
    """Wait, at most ``timeout`` seconds, until this process's sender thread has sent
    every batch queued so far; for a process about to exit. False if some were not."""
    current = _sender_queue
    if current is None or current[0] != os.getpid():
        return True
    batches, deadline = current[1], time.monotonic() + timeout
    with batches.all_tasks_done:
        while batches.unfinished_tasks:
            left = deadline - time.monotonic()
            if left <= 0:
                log.warning("live output: %d batches not sent at exit", batches.unfinished_tasks)
                return False
            batches.all_tasks_done.wait(left)
    return True


def _send(messages: list[tuple[str, str]]) -> None:
    """PUBLISH each (channel, payload), in order, in one pipeline (no MULTI)."""
    if not messages:
        return
    client = redis_store.redis_client()
    if client is None:
        return
    try:
        pipe = client.pipeline(transaction=False)
        for channel, payload in messages:
            pipe.publish(channel, payload)
        pipe.execute()
    except Exception as exc:
        _warn("live output", exc)


def iso(value: datetime) -> str:
    """UTC ISO 8601 with a Z (SQLite hands back naive UTC times)."""
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def event_message(event: dict[str, Any]) -> dict[str, Any]:
    """The job channel's message for one committed event row."""
    message = {
        "type": "event",
        "job_id": str(event["job_id"]),
        "seq": event["seq"],
        "event": event["type"],
        "data": event["data"],
        "created_at": iso(event["created_at"]),
        "status": event.get("status"),
        "progress": event.get("progress"),
        "organization_id": event.get("organization_id"),
        "kind": event.get("kind"),
        "agent_id": event.get("agent_id"),
    }
    if event["type"] == "job.running":
        message["title"] = event.get("title")
    return message


def _publish_event(event: dict[str, Any]) -> None:
    publish(str(event["job_id"]), event_message(event))


def socketio_events(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Seed 001's Socket.IO events that one job channel message (``event_message``)
    stands for; none for a streamed chunk."""
    if message.get("type") != "event":
        return []
    kind, data = message["event"], message.get("data") or {}
    job_id, timestamp, status = message["job_id"], message["created_at"], message.get("status")
    out: list[tuple[str, dict[str, Any]]] = []
    if kind.startswith("job.") or kind in PROGRESS_EVENTS:
        where = data.get("step") or data.get("phase")
        text = f"{kind.replace('.', ' ')}" + (f": {where}" if where else "")
        if kind == "job.failed" and data.get("error"):
            text = f"failed: {data['error']}"
        out.append(
            (
                "task_progress",
                {
                    "task_id": job_id,
                    "job_id": job_id,
                    "kind": message.get("kind"),
                    "progress": message.get("progress"),
                    "status": TASK_STATUS_WORDS.get(status, status),
                    "job_status": status,
                    "event": kind,
                    "seq": message["seq"],
                    "message": text,
                    "timestamp": timestamp,
                },
            )
        )
    if message.get("agent_id") and kind in AGENT_STATUS:
        out.append(
            (
                "agent_status",
                {
                    "agent_id": str(message["agent_id"]),
                    "status": AGENT_STATUS[kind],
                    "paused": kind == "job.paused",
                    "current_task": (
                        {"id": job_id, "title": message.get("title")}
                        if kind == "job.running"
                        else None
                    ),
                    "timestamp": timestamp,
                },
            )
        )
    if kind == "job.failed":
        out.append(
            (
                "error",
                {
                    "code": "JOB_FAILED",
                    "message": data.get("error") or "The job failed",
                    "details": {"job_id": job_id, "kind": message.get("kind")},
                },
            )
        )
    return out
