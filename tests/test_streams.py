"""The pieces under the live streams, on real PostgreSQL and Redis: an event row goes out
on its job's channel only once committed; the hub drops a client that falls behind; the
per-user cap; a stream without Redis follows the rows to the end."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
import redis

from baton.settings import get_settings
from models import Job, JobStatus
from models.db import session_factory, transaction
from orchestration import live, redis_store, streams
from orchestration.errors import NotFound
from orchestration.principal import Principal
from orchestration.state import append_event, transition_job
from tests import factories


@pytest.fixture
def job(database_url):
    sessions = session_factory(database_url)
    with transaction(sessions) as session:
        org = factories.organization(session)
        user = factories.user(session, org)
        row = Job(id=uuid.uuid4(), organization_id=org.id, created_by_id=user.id, kind="task",
                  status="running", priority="medium", title="t", input={}, settings={},
                  progress=0, total_steps=1, completed_steps=0, event_seq=0)  # fmt: skip
        session.add(row)
    return {"id": row.id, "org_id": org.id, "user_id": user.id, "sessions": sessions}


def listen(job_id: uuid.UUID) -> redis.client.PubSub:
    pubsub = redis_store.redis_client().pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(redis_store.job_channel(str(job_id)))
    return pubsub


def messages(pubsub: redis.client.PubSub, wait: float = 1.0) -> list[dict]:
    out, deadline = [], time.monotonic() + wait
    while time.monotonic() < deadline:
        message = pubsub.get_message(timeout=0.1)
        if message is not None:
            out.append(json.loads(message["data"]))
    return out


def test_an_event_row_is_published_after_commit_and_never_after_rollback(job):
    pubsub = listen(job["id"])
    with pytest.raises(RuntimeError), transaction(job["sessions"]) as session:
        append_event(session, job_id=job["id"], type="step.started", data={"step": "x"})
        raise RuntimeError("rolled back")
    assert messages(pubsub, 0.5) == []

    with transaction(job["sessions"]) as session:
        seq = append_event(session, job_id=job["id"], type="step.started", data={"step": "x"})
        assert messages(pubsub, 0.3) == []  # not before the commit
    [message] = messages(pubsub)
    assert (
        message["type"] == "event" and message["seq"] == seq == 1
    )  # the rollback took its number back
    assert message["event"] == "step.started" and message["data"] == {"step": "x"}
    assert message["status"] == "running" and message["job_id"] == str(job["id"])
    pubsub.close()


def test_a_commit_sent_in_the_background_keeps_its_place_in_order(job):
    """``live.send_in_background`` (the step engine's claim): its messages come from the
    sender thread, before anything the process publishes after the commit; a rolled-back
    transaction sends nothing."""
    pubsub = listen(job["id"])
    with pytest.raises(RuntimeError), transaction(job["sessions"]) as session:
        live.send_in_background(session)
        append_event(session, job_id=job["id"], type="step.started", data={"n": 0})
        raise RuntimeError("rolled back")
    with transaction(job["sessions"]) as session:
        live.send_in_background(session)
        append_event(session, job_id=job["id"], type="phase.started", data={"n": 1})
        append_event(session, job_id=job["id"], type="step.started", data={"n": 2})
    live.publish(str(job["id"]), {"type": "step.delta", "n": 3})
    with transaction(job["sessions"]) as session:
        append_event(session, job_id=job["id"], type="step.completed", data={"n": 4})
    got = messages(pubsub)
    assert [m.get("data", m).get("n") for m in got] == [1, 2, 3, 4]
    assert [m.get("seq") for m in got] == [1, 2, None, 3]
    pubsub.close()


FLUSH_AT_EXIT = """
import os, sys, uuid
from celery import signals
import workers  # noqa: F401  (the worker's signal handlers)
from models.db import session_factory, transaction
from orchestration import live
from orchestration.state import append_event
with transaction(session_factory(sys.argv[1])) as session:
    live.send_in_background(session)
    append_event(session, job_id=uuid.UUID(sys.argv[2]), type="step.started", data={"n": 1})
if sys.argv[3] == "shutdown":
    signals.worker_process_shutdown.send(sender=None, pid=os.getpid(), exitcode=0)
    os._exit(0)  # as a Celery prefork child exits: no atexit
sys.exit(0)  # a plain exit: atexit
"""


@pytest.mark.parametrize("how", ["shutdown", "exit"])
def test_what_the_sender_thread_holds_goes_out_before_the_process_exits(job, database_url, how):
    """A claim's messages, queued for the sender thread, are sent before its process ends:
    a Celery prefork child's shutdown signal, or any process's normal exit."""
    pubsub = listen(job["id"])
    subprocess.run(
        [sys.executable, "-c", FLUSH_AT_EXIT, database_url, str(job["id"]), how],
        check=True, timeout=60, cwd=Path(__file__).resolve().parent.parent,
    )  # fmt: skip
    [message] = messages(pubsub)
    assert message["event"] == "step.started" and message["data"] == {"n": 1}
    pubsub.close()


def test_the_hub_drops_a_client_that_falls_behind(job):
    hub = streams.LiveHub(get_settings().redis_url, redis_store.job_channel("*"), 10)
    slow, fast = hub.subscribe(str(job["id"])), hub.subscribe(str(job["id"]))
    for n in range(11):
        hub._dispatch(str(job["id"]), streams.LiveMessage({"type": "event", "seq": n + 1}))
        fast.get(0.01)  # this one keeps up
    assert slow.overflowed and not fast.overflowed
    assert hub.open_streams() == 1  # the slow one no longer receives anything
    hub.stop()


def test_a_hub_listener_hears_every_jobs_committed_events_with_their_socketio_facts(job):
    """``LiveHub.listen`` (the Socket.IO relay): every job's messages, on the hub's thread,
    each event carrying what its Socket.IO events need; a failing listener stops nothing."""
    hub = streams.LiveHub(get_settings().redis_url, redis_store.job_channel("*"), 10)
    heard: list[tuple[str, dict]] = []

    def broken(job_id: str, message: streams.LiveMessage) -> None:
        raise RuntimeError("a listener's bug")

    other = uuid.uuid4()
    ours = {str(other), str(job["id"])}  # not another test's job still finishing
    hub.listen(broken)
    hub.listen(lambda job_id, message: job_id in ours and heard.append((job_id, message.body)))
    try:
        assert hub.wait_live(10)
        live.publish(str(other), {"type": "step.delta", "delta": "x"})
        with transaction(job["sessions"]) as session:
            transition_job(session, job_id=job["id"], to=JobStatus.COMPLETED)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(heard) < 2:
            time.sleep(0.02)
        assert [(j, m["type"]) for j, m in heard] == [(str(other), "step.delta"),
                                                       (str(job["id"]), "event")]  # fmt: skip
        body = heard[1][1]
        assert body["event"] == "job.completed" and body["organization_id"] == str(job["org_id"])
        assert body["kind"] == "task" and body["agent_id"] is None and "title" not in body
        [(name, data)] = [e for e in live.socketio_events(body) if e[0] == "task_progress"]
        assert data["status"] == "completed" and data["task_id"] == str(job["id"])
        assert live.socketio_events(heard[0][1]) == []  # a chunk stands for no event
    finally:
        hub.stop()


def test_open_streams_are_capped_per_user(monkeypatch):
    from baton.settings import reset_settings_cache

    monkeypatch.setenv("BATON_STREAM_MAX_PER_USER", "2")
    reset_settings_cache()
    try:
        limit, user = streams.ConnectionLimit(), uuid.uuid4()
        limit.acquire(user)
        limit.acquire(user)
        with pytest.raises(streams.TooManyStreams):
            limit.acquire(user)
        limit.acquire(uuid.uuid4())  # another user is not affected
        limit.release(user)
        limit.acquire(user)
    finally:
        monkeypatch.undo()
        reset_settings_cache()


def test_without_redis_a_stream_follows_the_rows_to_the_end(job, monkeypatch):
    from baton.settings import reset_settings_cache

    monkeypatch.setenv("REDIS_URL", "")
    monkeypatch.setenv("BATON_STREAM_POLL_SECONDS", "0.05")
    reset_settings_cache()
    try:
        principal = Principal(user_id=job["user_id"], organization_id=job["org_id"], role="viewer")
        with transaction(job["sessions"]) as session:
            append_event(session, job_id=job["id"], type="step.started", data={"step": "a"})
        stream = streams.open_job_stream(job["sessions"], principal=principal, job_id=job["id"])
        assert stream.hub is None
        items: list[streams.StreamItem] = []
        reader = threading.Thread(target=lambda: items.extend(stream))
        reader.start()
        time.sleep(0.3)
        with transaction(job["sessions"]) as session:
            append_event(session, job_id=job["id"], type="step.completed",
                         data={"step": "a", "progress": 100})  # fmt: skip
            transition_job(session, job_id=job["id"], to=JobStatus.COMPLETED)
        reader.join(timeout=10)
        assert not reader.is_alive()
        events = [(i.body["seq"], i.body["event"]) for i in items if i.kind == "event"]
        assert events == [(1, "step.started"), (2, "step.completed"), (3, "job.completed")]
        assert items[-1].kind == "end" and items[-1].detail.job.status == "completed"
        assert items[-2].progress == 100

        stranger = Principal(user_id=uuid.uuid4(), organization_id=uuid.uuid4(), role="admin")
        with pytest.raises(NotFound):
            streams.open_job_stream(job["sessions"], principal=stranger, job_id=job["id"])
    finally:
        monkeypatch.undo()
        reset_settings_cache()
