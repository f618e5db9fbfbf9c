"""WebSocket (plain JSON frames, flask-sock) and Socket.IO (Flask-SocketIO) transports.

- ``/api/ws/build/{id}`` and ``/api/ws/analysis/{id}`` (seed 004): ``?token=``, then
  ``connected``, ``progress`` ..., ``completion`` or ``error``, then a normal close.
  ``?after=N`` resumes after event N (every progress frame carries its ``seq``).
- ``/api/v1/ws`` (seed 002): an ``auth`` frame first, then ``subscribe`` (``job_id``,
  optional ``after``), ``unsubscribe``, ``agent_execute`` and ``ping`` frames; each
  subscribed job sends ``event``, ``delta`` and ``end`` frames.
  A ``chat`` frame (``conversation_id``, ``message``) sends a message and answers with
  ``chat`` frames: ``event`` ``start`` (the reply's ``message_id``), ``token``...,
  ``done`` (``tokens_used``, ``cost``), as the POST's ``stream: true`` does.
- Socket.IO at ``/socket.io`` (seed 001): ``auth: {token}``; the connection joins its
  organization's room. That room gets ``task_progress``, ``agent_status`` and ``error``
  from this process, derived from the job channels' event messages its live hub hears
  (``_relay_job_events``), and ``budget_alert`` and ``emergency_pause`` as workers and
  the API emit them through the Redis message queue.
  ``join_conversation``/``leave_conversation`` enter a conversation's room, which gets
  ``message`` (each stored message, and the reply's tokens as ``status: streaming`` with
  a ``delta``; the document's nested ``agent`` and numeric ``cost_usd`` ride alongside
  Baton's ``agent_id`` and decimal ``cost``), ``agent_typing`` and others' ``typing``;
  ``send_message`` posts a message.
  At most 100 client events a minute per connection (seed 001).

Close codes: 4401 for a missing, bad, expired or revoked token (before any data frame),
1008 (policy violation) for an unknown or another organization's job or too many open
streams, 1013 (try again later) for a client that fell behind (it resumes with
``after``), 1000 at the end of a job.
"""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from typing import Any

from flask import Flask, current_app, request
from flask_sock import ConnectionClosed, Sock
from flask_socketio import SocketIO, emit, join_room, leave_room

from api.compat.command_center import DIALECT as COMMAND_CENTER
from api.compat.core import Problem
from api.compat.phase2 import DIALECT as PHASE2_DIALECT
from api.compat.phase2 import STATUS_WORDS as PHASE2
from api.compat.phase2 import may_view as phase2_may_view
from api.compat.phase2 import present_results as phase2_results
from api.security import principal_from_token, sessions
from api.streams.schemas import BuildFrames, ws_event_frame
from baton.settings import get_settings
from models import JobKind
from models.base import utcnow
from orchestration import agent_runs, conversations, live, streams
from orchestration.errors import AuthenticationRequired, DomainError, Forbidden, NotFound
from orchestration.principal import Principal

log = logging.getLogger(__name__)
PHASE2_BASE = PHASE2_DIALECT.base

sock = Sock()
socketio = SocketIO()

CLOSE_UNAUTHORIZED = 4401
CLOSE_POLICY = 1008
CLOSE_TRY_AGAIN = 1013
AUTH_TIMEOUT_SECONDS = 10
MAX_SUBSCRIPTIONS = 50
FRAMES_PER_MINUTE = 100  # seed 001: "WebSocket: 100 messages per minute per connection"


def _now() -> str:
    return live.iso(utcnow())


def _after() -> int:
    raw = request.args.get("after", "")
    return int(raw) if raw.isdigit() else 0


def _follow_build(ws: Any, job_id: uuid.UUID, kind: JobKind, what: str) -> None:
    try:
        principal = principal_from_token(request.args.get("token"))
        if not principal.can("job:read"):
            raise NotFound(f"{what} {job_id} not found")
        stream = streams.open_job_stream(
            sessions(), principal=principal, job_id=job_id, after=_after(), kind=kind
        )
        if not phase2_may_view(principal, stream.created_by_id):
            raise Forbidden(f"Not authorized to view this {what}")
        streams.connections.acquire(principal.user_id)
    except AuthenticationRequired as exc:
        ws.close(CLOSE_UNAUTHORIZED, exc.message)
        return
    except DomainError as exc:
        ws.close(CLOSE_POLICY, exc.message)
        return
    frames = BuildFrames(
        str(job_id),
        what,
        status_word=PHASE2.word,
        results=phase2_results,  # type: ignore[arg-type]
    )
    items = iter(stream)
    try:
        ws.send(frames.connected(_now()))
        for item in items:
            if item.kind == "dropped":
                ws.close(CLOSE_TRY_AGAIN, f"fell behind; reconnect with ?after={stream.last}")
                return
            frame = frames(item, _now())
            if frame:
                ws.send(frame)
            if item.kind == "heartbeat" and not ws.connected:
                return
        ws.close(1000, f"{what} finished")
    finally:
        items.close()  # type: ignore[attr-defined]
        streams.connections.release(principal.user_id)


# Seed 004's paths, at the root and under its dialect's base (its status words in both).
for _base in ("", PHASE2_BASE):
    _name = "phase2_" if _base else ""

    @sock.route(f"{_base}/api/ws/build/<uuid:job_id>", endpoint=f"{_name}build_socket")
    def build_socket(ws: Any, job_id: uuid.UUID) -> None:
        _follow_build(ws, job_id, JobKind.BUILD, "build")

    @sock.route(f"{_base}/api/ws/analysis/<uuid:job_id>", endpoint=f"{_name}analysis_socket")
    def analysis_socket(ws: Any, job_id: uuid.UUID) -> None:
        _follow_build(ws, job_id, JobKind.ANALYSIS, "analysis")


class Multiplexed:
    """One ``/api/v1/ws`` connection: its subscriptions, each followed by its own thread
    (a greenlet under gevent), and one lock around sends."""

    def __init__(self, ws: Any, principal: Principal, app: Flask) -> None:
        self.ws, self.principal, self.app = ws, principal, app
        self.send_lock = threading.Lock()
        self.following: dict[uuid.UUID, threading.Event] = {}
        self.frames: list[float] = []

    def send(self, frame: dict[str, Any] | str) -> None:
        text = frame if isinstance(frame, str) else json.dumps(frame, default=str)
        with self.send_lock:
            self.ws.send(text)

    def error(self, code: str, message: str, **details: Any) -> None:
        self.send({"type": "error", "code": code, "message": message, "details": details})

    def rate_limited(self) -> bool:
        now = time.monotonic()
        self.frames = [t for t in self.frames if now - t < 60] + [now]
        return len(self.frames) > FRAMES_PER_MINUTE

    def subscribe(self, job_id: uuid.UUID, after: int) -> bool:
        """False when the job is not the caller's (the connection is then closed)."""
        if job_id in self.following:
            return True
        if len(self.following) >= MAX_SUBSCRIPTIONS:
            self.error("RATE_LIMIT_EXCEEDED", f"At most {MAX_SUBSCRIPTIONS} jobs per connection")
            return True
        try:
            stream = streams.open_job_stream(
                sessions(), principal=self.principal, job_id=job_id, after=after
            )
        except NotFound:
            return False
        stop = threading.Event()
        self.following[job_id] = stop
        self.send({"type": "subscribed", "job_id": str(job_id), "after": after})
        threading.Thread(target=self._follow, args=(job_id, stream, stop), daemon=True).start()
        return True

    def _follow(self, job_id: uuid.UUID, stream: streams.JobStream, stop: threading.Event) -> None:
        items = iter(stream)
        try:
            for item in items:
                if stop.is_set() or not self.ws.connected:
                    return
                if item.kind == "dropped":
                    self.send({"type": "dropped", "job_id": str(job_id), "after": stream.last})
                    return
                frame = ws_event_frame(item)
                if frame:
                    self.send(frame)
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("following job %s over /api/v1/ws failed", job_id)
        finally:
            items.close()  # type: ignore[attr-defined]
            self.following.pop(job_id, None)

    def agent_execute(self, frame: dict[str, Any]) -> bool:
        if not self.principal.can("job:create"):
            self.error("FORBIDDEN", f"Your role ({self.principal.role}) does not allow job:create")
            return True
        try:
            agent_id = uuid.UUID(str(frame.get("agent_id")))
            text = frame.get("input")
            if not isinstance(text, str) or not text.strip():
                raise ValueError("input")
        except ValueError:
            self.error("VALIDATION_ERROR", "agent_execute needs agent_id (a UUID) and input")
            return True
        try:
            detail = agent_runs.run_agent(
                sessions(), principal=self.principal, agent_id=agent_id, input_text=text,
                task_type=frame.get("task_type"), metadata=frame.get("metadata") or {},
                wait_seconds=0, purpose="execute",
            )  # fmt: skip
        except DomainError as exc:
            self.error(exc.code, exc.message, agent_id=str(agent_id))
            return True
        job_id = detail.job.id
        self.send(
            {"type": "agent_execution_started", "agent_id": str(agent_id), "job_id": str(job_id)}
        )
        return self.subscribe(job_id, 0)

    def chat(self, frame: dict[str, Any]) -> bool:
        """Seed 002's chat frame: the message is stored and the reply streams back."""
        if not self.principal.can("job:create"):
            self.error("FORBIDDEN", f"Your role ({self.principal.role}) does not allow job:create")
            return True
        try:
            conversation_id = uuid.UUID(str(frame.get("conversation_id")))
        except ValueError:
            self.error("VALIDATION_ERROR", "chat needs conversation_id (a UUID) and message")
            return True
        text = frame.get("message")
        try:
            posted = conversations.post_message(
                sessions(), principal=self.principal, conversation_id=conversation_id,
                content=text if isinstance(text, str) else "",
            )  # fmt: skip
        except DomainError as exc:
            self.error(exc.code, exc.message, conversation_id=str(conversation_id))
            return True
        events = conversations.reply_events(
            sessions(), principal=self.principal, reply=posted.reply,
            seconds=get_settings().chat_wait_seconds,
        )  # fmt: skip
        threading.Thread(
            target=self._chat_reply, args=(conversation_id, events), daemon=True
        ).start()
        return True

    def _chat_reply(self, conversation_id: uuid.UUID, events: Any) -> None:
        try:
            for event in events:
                if not self.ws.connected:
                    return  # the reply goes on in the worker and is stored
                kind = event.pop("type")
                self.send(
                    {
                        "type": "chat",
                        "event": kind,
                        "conversation_id": str(conversation_id),
                        **event,
                    }
                )
        except ConnectionClosed:
            pass
        except Exception:
            log.exception("streaming a reply over /api/v1/ws failed")
        finally:
            events.close()

    def handle(self, raw: Any) -> bool:
        """One client frame; False closes the connection (policy violation)."""
        if self.rate_limited():
            self.error("RATE_LIMIT_EXCEEDED", f"At most {FRAMES_PER_MINUTE} frames a minute")
            return True
        try:
            frame = json.loads(raw)
            kind = frame["type"]
        except (ValueError, TypeError, KeyError):
            self.error("VALIDATION_ERROR", "Frames are JSON objects with a type")
            return True
        if kind == "ping":
            self.send({"type": "pong", "timestamp": _now()})
        elif kind in ("subscribe", "unsubscribe"):
            try:
                job_id = uuid.UUID(str(frame.get("job_id")))
                after = int(frame.get("after") or 0)
            except ValueError:
                self.error("VALIDATION_ERROR", f"{kind} needs job_id (a UUID)")
                return True
            if kind == "unsubscribe":
                if stop := self.following.pop(job_id, None):
                    stop.set()
                self.send({"type": "unsubscribed", "job_id": str(job_id)})
                return True
            if not self.principal.can("job:read"):
                return False
            return self.subscribe(job_id, max(after, 0))
        elif kind == "agent_execute":
            return self.agent_execute(frame)
        elif kind == "chat":
            return self.chat(frame)
        elif kind == "auth":
            self.error("VALIDATION_ERROR", "Already authenticated")
        else:
            self.error("VALIDATION_ERROR", f"Unknown frame type '{kind}'")
        return True

    def close(self) -> None:
        for stop in list(self.following.values()):
            stop.set()


def multiplexed_socket(ws: Any) -> None:
    """Seed 002's socket (also routed under its dialect's base, api.compat.task_assistant)."""
    try:
        raw = ws.receive(timeout=AUTH_TIMEOUT_SECONDS)
        frame = json.loads(raw) if raw else {}
        if not isinstance(frame, dict) or frame.get("type") != "auth":
            raise AuthenticationRequired("The first frame must be {type: auth, token}")
        principal = principal_from_token(frame.get("token"))
        streams.connections.acquire(principal.user_id)
    except (AuthenticationRequired, ValueError) as exc:
        ws.close(CLOSE_UNAUTHORIZED, getattr(exc, "message", "A valid access token is required"))
        return
    except DomainError as exc:
        ws.close(CLOSE_POLICY, exc.message)
        return
    conn = Multiplexed(ws, principal, current_app._get_current_object())  # type: ignore[attr-defined]
    try:
        conn.send(
            {"type": "authenticated", "user_id": str(principal.user_id),
             "organization_id": str(principal.organization_id), "role": principal.role}
        )  # fmt: skip
        while ws.connected:
            raw = ws.receive(timeout=get_settings().stream_heartbeat_seconds)
            if raw is None:
                continue
            if not conn.handle(raw):
                ws.close(CLOSE_POLICY, "job not found")
                return
    finally:
        conn.close()
        streams.connections.release(principal.user_id)


sock.route("/api/v1/ws")(multiplexed_socket)


# -- Socket.IO ------------------------------------------------------------------------------

_socket_users: dict[str, uuid.UUID] = {}
_socket_principals: dict[str, Principal] = {}
_socket_frames: dict[str, list[float]] = {}
# How long a connection waits for the live hub's subscription (once a process): events
# published before it is in place would not reach the room.
HUB_WAIT_SECONDS = 5.0


class _ConnectedOrganizations:
    """Organizations with a Socket.IO client on this process (the relay skips the rest)."""

    def __init__(self) -> None:
        self._count: dict[str, int] = {}
        self._lock = threading.Lock()

    def add(self, organization_id: uuid.UUID) -> None:
        with self._lock:
            key = str(organization_id)
            self._count[key] = self._count.get(key, 0) + 1

    def remove(self, organization_id: uuid.UUID) -> None:
        with self._lock:
            key = str(organization_id)
            if self._count.get(key, 0) > 1:
                self._count[key] -= 1
            else:
                self._count.pop(key, None)

    def __contains__(self, organization_id: object) -> bool:
        return organization_id in self._count


_connected_organizations = _ConnectedOrganizations()


def _relay_job_events(job_id: str, message: streams.LiveMessage) -> None:
    """The live hub's listener: seed 001's events that a job event stands for
    (``live.socketio_events``), emitted to its organization's room on this process only.
    Every stream process hears the job channels itself, so the message queue would
    deliver each event to a client twice."""
    organization_id = message.body.get("organization_id")
    if organization_id not in _connected_organizations:
        return
    room = live.organization_room(organization_id)
    for name, data in live.socketio_events(message.body):
        socketio.emit(name, data, to=room, ignore_queue=True)


@socketio.on("connect")
def _socketio_connect(auth: dict[str, Any] | None = None) -> None:
    token = (auth or {}).get("token") if isinstance(auth, dict) else None
    try:
        principal = principal_from_token(token or request.args.get("token"))
        streams.connections.acquire(principal.user_id)
    except DomainError as exc:
        raise ConnectionRefusedError({"code": exc.code, "message": exc.message}) from exc
    _socket_users[request.sid] = principal.user_id  # type: ignore[attr-defined]
    _socket_principals[request.sid] = principal  # type: ignore[attr-defined]
    join_room(live.organization_room(principal.organization_id))
    join_room(f"user:{principal.user_id}")
    _connected_organizations.add(principal.organization_id)
    hub = streams.hub()
    if hub is not None:  # without Redis (embedded) the room hears this process only
        hub.listen(_relay_job_events)
        hub.wait_live(HUB_WAIT_SECONDS)


@socketio.on("disconnect")
def _socketio_disconnect(*_args: Any) -> None:
    user_id = _socket_users.pop(request.sid, None)  # type: ignore[attr-defined]
    principal = _socket_principals.pop(request.sid, None)  # type: ignore[attr-defined]
    _socket_frames.pop(request.sid, None)  # type: ignore[attr-defined]
    if principal is not None:
        _connected_organizations.remove(principal.organization_id)
    if user_id is not None:
        streams.connections.release(user_id)


def _emit_error(code: str, message: str, details: Any = None) -> None:
    """Seed 001's ``error`` event, ``{code, message, details: {}}``, in the words of its
    REST errors (the command-center dialect's: ``details`` an object, its codes)."""
    problem = Problem(status=0, code=code, message=message, details=details, request_id="")
    body = COMMAND_CENTER.error_body(problem)["error"]
    emit("error", {"code": body["code"], "message": message, "details": body["details"]})


def _conversation_event(data: Any) -> tuple[Principal, uuid.UUID] | None:
    """The caller and the event's conversation (theirs), or None after an ``error``
    event (rate limit, bad id, another organization's or a missing conversation)."""
    sid = request.sid  # type: ignore[attr-defined]
    principal = _socket_principals.get(sid)
    if principal is None:
        return None
    now = time.monotonic()
    frames = [t for t in _socket_frames.get(sid, []) if now - t < 60] + [now]
    _socket_frames[sid] = frames
    if len(frames) > FRAMES_PER_MINUTE:
        _emit_error("RATE_LIMIT_EXCEEDED", f"At most {FRAMES_PER_MINUTE} messages a minute")
        return None
    try:
        conversation_id = uuid.UUID(str((data or {}).get("conversation_id")))
        conversations.get_conversation(
            sessions(), principal=principal, conversation_id=conversation_id, limit=1
        )
    except (ValueError, AttributeError):
        _emit_error("VALIDATION_ERROR", "conversation_id must be a UUID",
                    [{"field": "conversation_id", "message": "Not a valid UUID."}])  # fmt: skip
        return None
    except DomainError as exc:
        _emit_error(exc.code, exc.message, exc.details)
        return None
    return principal, conversation_id


@socketio.on("join_conversation")
def _join_conversation(data: Any = None) -> None:
    if found := _conversation_event(data):
        join_room(live.conversation_room(found[1]))


@socketio.on("leave_conversation")
def _leave_conversation(data: Any = None) -> None:
    if found := _conversation_event(data):
        leave_room(live.conversation_room(found[1]))


@socketio.on("send_message")
def _send_message(data: Any = None) -> None:
    """The REST message, over the socket: the room hears it (and the reply) as
    ``message`` events."""
    if not (found := _conversation_event(data)):
        return
    principal, conversation_id = found
    if not principal.can("job:create"):
        _emit_error("FORBIDDEN", "Your role does not allow job:create")
        return
    try:
        reply_to = data.get("reply_to")
        conversations.post_message(
            sessions(), principal=principal, conversation_id=conversation_id,
            content=data.get("content") if isinstance(data.get("content"), str) else "",
            reply_to=uuid.UUID(str(reply_to)) if reply_to else None,
        )  # fmt: skip
    except ValueError:
        _emit_error("VALIDATION_ERROR", "reply_to must be a UUID",
                    [{"field": "reply_to", "message": "Not a valid UUID."}])  # fmt: skip
    except DomainError as exc:
        _emit_error(exc.code, exc.message, exc.details)


# The document's heading names it ``typing_indicator``, its example emits ``typing``.
@socketio.on("typing_indicator")
@socketio.on("typing")
def _typing(data: Any = None) -> None:
    """Tell the others in the conversation's room who is typing."""
    if not (found := _conversation_event(data)):
        return
    principal, conversation_id = found
    emit(
        "typing",
        {"conversation_id": str(conversation_id), "user_id": str(principal.user_id),
         "is_typing": bool(data.get("is_typing", True))},
        to=live.conversation_room(conversation_id), include_self=False,
    )  # fmt: skip


def init_sockets(app: Flask, *, async_mode: str) -> None:
    """WebSocket routes and Socket.IO on ``app``; Socket.IO hears workers through the
    job channels and the Redis message queue (without Redis, only what this process
    emits)."""
    sock.init_app(app)
    app.config.setdefault("SOCK_SERVER_OPTIONS", {"ping_interval": 25})
    redis_url = get_settings().redis_url
    socketio.init_app(
        app,
        async_mode=async_mode,
        message_queue=redis_url or None,
        channel=live.socketio_channel(),
        cors_allowed_origins="*",
    )
