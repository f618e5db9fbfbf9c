"""Following a job live: event rows first, then the job's Redis channel, gap-free.

One ``LiveHub`` per process holds ONE Redis pattern subscription
(``<prefix>:jobs:*:live``) and fans each message out to the streams following that job,
each through a bounded queue: a slow client overflows its own queue and is dropped (it
resumes from its last event number), never slowing the hub, other clients or workers.
It also hands every message to its listeners (``listen``): the Socket.IO relay, which
derives the organization rooms' events from them.

A ``JobStream`` subscribes first, then replays the rows after the client's last event
number, then takes live messages, keeping the last number it sent: a live event it has
already sent is skipped, the next one is sent, and one past a gap (a message lost or
published out of order) sends it to the rows instead. When Redis is away (an outage, or
the embedded mode without Redis) it reads the rows every ``BATON_STREAM_POLL_SECONDS``
and goes back to live messages once the hub has re-subscribed. Rows are also read on
every idle heartbeat, so a lost message never stalls a stream for longer than that.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import redis
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import TERMINAL_STATUSES, Job, JobEvent, JobKind
from models.db import transaction
from orchestration import jobs, live, redis_store
from orchestration.errors import DomainError
from orchestration.principal import Principal

log = logging.getLogger(__name__)

REPLAY_BATCH = 500


class TooManyStreams(DomainError):
    code, status = "RATE_LIMIT_EXCEEDED", 429


class LiveMessage:
    """One message from the job channel, shared by every stream following the job; each
    transport encodes it once (``encoded``), not once per client."""

    __slots__ = ("body", "_encodings")

    def __init__(self, body: dict[str, Any]) -> None:
        self.body = body
        self._encodings: dict[str, Any] = {}

    @property
    def is_event(self) -> bool:
        return self.body.get("type") == "event"

    @property
    def seq(self) -> int:
        return int(self.body.get("seq") or 0)

    def encoded(self, key: str, encode: Any) -> Any:
        if key not in self._encodings:
            self._encodings[key] = encode(self.body)
        return self._encodings[key]


RESYNC = LiveMessage({"type": "resync"})  # the hub (re)subscribed: read the rows
Listener = Callable[[str, LiveMessage], None]


class Subscription:
    def __init__(self, job_id: str, maxsize: int) -> None:
        self.job_id = job_id
        self.queue: queue.Queue[LiveMessage] = queue.Queue(maxsize)
        self.overflowed = False

    def offer(self, message: LiveMessage) -> bool:
        try:
            self.queue.put_nowait(message)
            return True
        except queue.Full:
            self.overflowed = True
            return False

    def get(self, timeout: float) -> LiveMessage | None:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None


class LiveHub:
    """This process's one subscription to every job channel (see the module docstring)."""

    RETRY_MAX_SECONDS = 1.0

    def __init__(self, redis_url: str, pattern: str, buffer: int) -> None:
        self.redis_url, self.pattern, self.buffer = redis_url, pattern, buffer
        self._subs: dict[str, set[Subscription]] = {}
        self._lock = threading.Lock()
        self._listeners: tuple[Listener, ...] = ()
        self._thread: threading.Thread | None = None
        self._stopped = False
        # Subscribed right now: live messages can be trusted to arrive.
        self._live = threading.Event()
        self.messages = 0

    @property
    def live(self) -> bool:
        return self._live.is_set()

    def wait_live(self, timeout: float) -> bool:
        """Wait, at most ``timeout`` seconds, until the subscription is in place."""
        return self._live.wait(timeout)

    def _start(self) -> None:  # under self._lock
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="baton-live-hub", daemon=True)
            self._thread.start()

    def subscribe(self, job_id: str) -> Subscription:
        sub = Subscription(job_id, self.buffer)
        with self._lock:
            self._subs.setdefault(job_id, set()).add(sub)
            self._start()
        return sub

    def listen(self, listener: Listener) -> None:
        """Call ``listener(job_id, message)`` with every message of every job from now on,
        on the hub's thread (so it must be quick and must not block); once per listener."""
        with self._lock:
            if listener not in self._listeners:
                self._listeners = (*self._listeners, listener)
            self._start()

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            subs = self._subs.get(sub.job_id)
            if subs is not None:
                subs.discard(sub)
                if not subs:
                    del self._subs[sub.job_id]

    def open_streams(self) -> int:
        with self._lock:
            return sum(len(s) for s in self._subs.values())

    def stop(self) -> None:
        self._stopped = True

    def _dispatch(self, job_id: str, message: LiveMessage) -> None:
        with self._lock:
            subs = list(self._subs.get(job_id, ()))
        for sub in subs:
            if not sub.offer(message):
                self.unsubscribe(sub)  # dropped: it resumes from its last event number

    def _broadcast(self, message: LiveMessage) -> None:
        with self._lock:
            job_ids = list(self._subs)
        for job_id in job_ids:
            self._dispatch(job_id, message)

    def _run(self) -> None:
        retry = 0.2
        prefix, suffix = self.pattern.split("*", 1)
        while not self._stopped:
            client = None
            try:
                client = redis.Redis.from_url(
                    self.redis_url,
                    socket_connect_timeout=redis_store.SOCKET_TIMEOUT_SECONDS,
                    socket_timeout=10,
                    health_check_interval=5,
                )
                pubsub = client.pubsub()
                pubsub.psubscribe(self.pattern)
                # Redis's confirmation comes before any message: live from then on.
                while pubsub.get_message(timeout=1.0) is None:
                    if self._stopped:
                        return
                self._live.set()
                retry = 0.2
                self._broadcast(RESYNC)  # whatever was published while away is in the rows
                while not self._stopped:
                    raw = pubsub.get_message(timeout=1.0)
                    if raw is None or raw.get("type") != "pmessage":
                        continue
                    channel = raw["channel"].decode()
                    job_id = channel[len(prefix) : len(channel) - len(suffix)]
                    try:
                        body = json.loads(raw["data"])
                    except ValueError:
                        continue
                    self.messages += 1
                    message = LiveMessage(body)
                    self._dispatch(job_id, message)
                    for listener in self._listeners:
                        try:
                            listener(job_id, message)
                        except Exception:  # one listener's bug must not stop every stream
                            log.exception("live hub listener %r failed", listener)
            except Exception as exc:
                if self.live:
                    log.warning("live hub lost redis (%s); streams read event rows meanwhile", exc)
                    self._live.clear()
                    self._broadcast(RESYNC)  # wake every stream: poll the rows from now on
                time.sleep(retry)
                retry = min(retry * 2, self.RETRY_MAX_SECONDS)
            finally:
                self._live.clear()
                if client is not None:
                    with contextlib.suppress(Exception):
                        client.close()


_hub_lock = threading.Lock()
_hub: tuple[int, LiveHub] | None = None


def hub() -> LiveHub | None:
    """This process's hub, or None without Redis (embedded mode: streams poll the rows)."""
    global _hub
    settings = get_settings()
    if not settings.redis_url:
        return None
    with _hub_lock:
        if _hub is None or _hub[0] != os.getpid():
            pattern = redis_store.job_channel("*")
            _hub = (
                os.getpid(),
                LiveHub(settings.redis_url, pattern, settings.stream_buffer_messages),
            )
        return _hub[1]


class ConnectionLimit:
    """Open streams per user in this process (SSE, WebSocket and Socket.IO together)."""

    def __init__(self) -> None:
        self._open: dict[uuid.UUID, int] = {}
        self._lock = threading.Lock()

    def acquire(self, user_id: uuid.UUID) -> None:
        limit = get_settings().stream_max_per_user
        with self._lock:
            if self._open.get(user_id, 0) >= limit:
                raise TooManyStreams(
                    f"At most {limit} open streams per user; close one first",
                    {"limit": limit},
                )
            self._open[user_id] = self._open.get(user_id, 0) + 1

    def release(self, user_id: uuid.UUID) -> None:
        with self._lock:
            left = self._open.get(user_id, 0) - 1
            if left > 0:
                self._open[user_id] = left
            else:
                self._open.pop(user_id, None)


connections = ConnectionLimit()


@dataclass
class StreamItem:
    """What a stream hands its transport: an ``event`` (a row, numbered), a ``delta``
    (streamed text, not numbered), a ``heartbeat``, ``end`` (with the finished job) or
    ``dropped`` (this client fell behind: it should reconnect and resume)."""

    kind: str
    message: LiveMessage | None = None
    progress: int | None = None
    detail: jobs.JobDetail | None = None

    @property
    def body(self) -> dict[str, Any]:
        return self.message.body if self.message is not None else {}


def _row_message(job_id: uuid.UUID, row: JobEvent) -> LiveMessage:
    return LiveMessage(
        {
            "type": "event",
            "job_id": str(job_id),
            "seq": row.seq,
            "event": row.type,
            "data": row.data or {},
            "created_at": live.iso(row.created_at),
        }
    )


class JobStream:
    """A job's events after ``after``, then its live messages, until the job ends."""

    def __init__(
        self, sessions: sessionmaker[Session], *, job: Job, after: int, hub: LiveHub | None
    ) -> None:
        self.sessions, self.job_id, self.after, self.hub = sessions, job.id, after, hub
        self.kind, self.created_by_id = job.kind, job.created_by_id
        self.last = after
        self.progress = 0  # as of the last event sent (see open_job_stream for a resume)
        self.finished = False
        self.settings = get_settings()

    def _rows(self) -> list[LiveMessage]:
        """Rows after the last sent one, in order (and whether the job has ended)."""
        out: list[LiveMessage] = []
        with transaction(self.sessions) as session:
            while True:
                rows = list(
                    session.scalars(
                        sa.select(JobEvent)
                        .where(JobEvent.job_id == self.job_id, JobEvent.seq > self.last)
                        .order_by(JobEvent.seq)
                        .limit(REPLAY_BATCH)
                    )
                )
                out.extend(_row_message(self.job_id, r) for r in rows)
                if len(rows) < REPLAY_BATCH:
                    break
                self.last = rows[-1].seq
        return out

    def _event(self, message: LiveMessage) -> StreamItem:
        self.last = message.seq
        body = message.body
        progress = body.get("progress")
        if progress is None:
            progress = (body.get("data") or {}).get("progress")
        if progress is not None:
            self.progress = int(progress)
        if body.get("event") in live.TERMINAL_EVENTS:
            self.finished = True
            if body.get("event") == "job.completed":
                self.progress = 100
        return StreamItem("event", message, self.progress)

    def _catch_up(self) -> Iterator[StreamItem]:
        start = self.last
        for message in self._rows():
            if message.seq > start:
                yield self._event(message)

    def _end(self) -> StreamItem:
        with transaction(self.sessions) as session:
            job = session.get(Job, self.job_id)
            detail = jobs.detail_of(session, job) if job is not None else None
        return StreamItem("end", progress=self.progress, detail=detail)

    def __iter__(self) -> Iterator[StreamItem]:
        hub, settings = self.hub, self.settings
        sub = hub.subscribe(str(self.job_id)) if hub is not None else None
        try:
            yield from self._catch_up()
            if not self.finished and self._status() in TERMINAL_STATUSES:
                # Ended before the client's ``after``: its terminal row is behind it.
                yield from self._catch_up()
                self.finished = True
            if self.finished:
                yield self._end()
                return
            wrote_at = time.monotonic()
            while True:
                if sub is not None and sub.overflowed:
                    yield StreamItem("dropped")
                    return
                polling = sub is None or hub is None or not hub.live
                wait = (
                    settings.stream_poll_seconds if polling else settings.stream_heartbeat_seconds
                )
                message = sub.get(wait) if sub is not None else _sleep(wait)
                items: list[StreamItem] = []
                if message is None or message is RESYNC:
                    items = list(self._catch_up())
                elif message.is_event:
                    if message.seq == self.last + 1:
                        items = [self._event(message)]
                    elif message.seq > self.last:  # a gap: the rows have it all, in order
                        items = list(self._catch_up())
                elif message.body.get("type") == "step.delta":
                    items = [StreamItem("delta", message, self.progress)]
                for item in items:
                    yield item
                    wrote_at = time.monotonic()
                if self.finished:
                    yield self._end()
                    return
                if time.monotonic() - wrote_at >= settings.stream_heartbeat_seconds:
                    yield StreamItem("heartbeat")
                    wrote_at = time.monotonic()
        finally:
            if sub is not None and hub is not None:
                hub.unsubscribe(sub)

    def _status(self) -> str | None:
        with transaction(self.sessions) as session:
            return session.scalar(sa.select(Job.status).where(Job.id == self.job_id))


def _sleep(seconds: float) -> None:
    time.sleep(seconds)
    return None


def open_job_stream(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    job_id: uuid.UUID,
    after: int = 0,
    kind: JobKind | None = None,
) -> JobStream:
    """Check the caller may read the job (another organization's: 404, before any byte),
    then hand back the stream; iterating it subscribes, replays and follows."""
    after = max(0, after)
    with transaction(sessions) as session:
        job = jobs.get_owned_job(session, principal=principal, job_id=job_id, kind=kind)
        session.expunge(job)
        # A resumed stream's progress is the last one reported up to where it resumes.
        reported = (
            session.scalar(
                sa.select(JobEvent.data)
                .where(
                    JobEvent.job_id == job_id,
                    JobEvent.seq <= after,
                    JobEvent.type == "step.completed",
                )
                .order_by(JobEvent.seq.desc())
                .limit(1)
            )
            if after
            else None
        )
    stream = JobStream(sessions, job=job, after=after, hub=hub())
    stream.progress = int((reported or {}).get("progress") or 0)
    return stream
