"""Live streams end to end: the stream process under real gunicorn with the gevent worker,
real Celery workers, PostgreSQL and Redis; SSE, both WebSocket kinds and Socket.IO."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import socketio
import websocket

from baton.settings import reset_settings_cache
from baton.stream import stream_command
from baton.watch import parse_sse
from orchestration import live
from tests.conftest import ROOT, WorkerPool
from tests.helpers import live_tenant, wait_terminal
from tests.processes import free_port

pytestmark = pytest.mark.usefixtures("workers")

ORCHESTRATION = {
    "topic": "A small key-value store",
    "custom_phases": ["ideation", "design", "implementation"],
}


class StreamServer:
    """``baton stream``'s command (gunicorn -k gevent) on a free port."""

    def __init__(self, env: dict[str, str] | None = None, log_name: str = "stream.log") -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {})}
        self.log = Path(self.env["BATON_HOME"]) / log_name
        self.proc: subprocess.Popen | None = None

    def start(self) -> StreamServer:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                stream_command("127.0.0.1", self.port), cwd=ROOT, env=self.env,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"stream server exited: {self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/api/v1/health/live", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"stream server not up: {self.log.read_text()[-3000:]}")

    def crash(self) -> None:
        """SIGKILL to gunicorn and its worker: every connection drops at once."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()


@pytest.fixture(scope="module")
def stream_server(database_url: str) -> Iterator[StreamServer]:
    server = StreamServer().start()
    yield server
    server.stop()


@pytest.fixture
def tenant(live_client, database_url):
    return live_tenant(live_client.application, database_url)


def token_of(tenant: dict[str, Any]) -> str:
    return tenant["headers"]["Authorization"].split(" ", 1)[1]


def submit(client, headers, path: str = "/api/v1/orchestrate", body: dict | None = None) -> str:
    response = client.post(path, json=body or ORCHESTRATION, headers=headers)
    assert response.status_code == 202, response.get_json()
    data = response.get_json()
    return data["job_id"]


def read_sse(
    url: str,
    headers: dict[str, str],
    *,
    stop_after_seq: int | None = None,
    timeout: float = 90,
    into: list[Any] | None = None,
) -> list[Any]:
    """Every SSE message until the stream closes (or until event ``stop_after_seq``),
    appended to ``into`` as they arrive."""
    events = into if into is not None else []
    with (
        httpx.Client(timeout=httpx.Timeout(10, read=timeout)) as client,
        client.stream("GET", url, headers=headers) as response,
    ):
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        for event in parse_sse(response.iter_lines()):
            events.append(event)
            if stop_after_seq is not None and event.id and int(event.id) >= stop_after_seq:
                break
    return events


def history_seqs(live_client, headers, job_id) -> list[tuple[int, str]]:
    body = live_client.get(f"/api/v1/jobs/{job_id}", headers=headers).get_json()
    return [(e["seq"], e["type"]) for e in body["history"]]


def numbered(events: list[Any]) -> list[tuple[int, str]]:
    return [(int(e.id), e.event) for e in events if e.id is not None]


def test_sse_follows_a_job_to_the_end_in_order(stream_server, live_client, tenant):
    h = tenant["headers"]
    body = {**ORCHESTRATION, "settings": {"stream": True, "ai_model": "sim/slow-stream"}}
    job_id = submit(live_client, h, body=body)
    events = read_sse(f"{stream_server.url}/api/v1/jobs/{job_id}/stream", h)

    seen = numbered(events)
    assert [s for s, _ in seen] == list(range(1, len(seen) + 1))  # in order, no gap, no dup
    assert seen[-1][1] == "job.completed"
    assert seen == history_seqs(live_client, h, job_id)  # exactly the job's history
    # Tokens as generated: deltas (not numbered) arrive before their phase completes.
    deltas = [e for e in events if e.event == "step.delta"]
    assert deltas and all(e.id is None for e in deltas)
    first_delta = events.index(deltas[0])
    first_phase_done = next(i for i, e in enumerate(events) if e.event == "phase.completed")
    assert first_delta < first_phase_done
    # The phase's output travels with its event; the end message carries the finished job.
    done = [json.loads(e.data) for e in events if e.event == "phase.completed"]
    assert [d["data"]["phase"] for d in done] == ["Ideation", "Design", "Implementation"]
    assert all(d["data"]["output"] for d in done)
    end = json.loads(events[-1].data)
    assert events[-1].event == "end" and end["status"] == "completed"
    assert end["token_usage"]["total_tokens"] > 0 and float(end["cost"]) > 0
    assert end["result"]["summary"]

    # A finished job replays and closes at once; the kind's own route answers the same.
    again = read_sse(f"{stream_server.url}/api/v1/orchestrations/{job_id}/stream?after=3", h)
    assert numbered(again) == seen[3:]


def test_resume_from_last_event_id_has_no_gap_and_no_duplicate(stream_server, live_client, tenant):
    h = tenant["headers"]
    body = {**ORCHESTRATION, "settings": {"ai_model": "sim/slow"}}
    job_id = submit(live_client, h, body=body)
    url = f"{stream_server.url}/api/v1/jobs/{job_id}/stream"
    first = read_sse(url, h, stop_after_seq=4)  # cut mid-job (each phase takes ~1 s)
    last_id = numbered(first)[-1][0]
    status = live_client.get(f"/api/v1/jobs/{job_id}", headers=h).get_json()["status"]
    assert status in ("queued", "running")  # really mid-stream
    rest = read_sse(url, {**h, "Last-Event-ID": str(last_id)})
    combined = numbered(first) + numbered(rest)
    assert [s for s, _ in combined] == list(range(1, len(combined) + 1))
    assert combined == history_seqs(live_client, h, job_id)
    assert rest[-1].event == "end"


def test_task_stream_speaks_seed_000(stream_server, live_client, tenant):
    h = tenant["headers"]
    job_id = submit(live_client, h, "/api/v1/tasks", {"description": "Summarise the notes"})
    # A browser's EventSource cannot set headers: ?token= works for streams.
    events = read_sse(
        f"{stream_server.url}/api/v1/tasks/{job_id}/stream?token={token_of(tenant)}", {}
    )
    lines = [json.loads(e.data) for e in events if e.data]
    assert lines[0]["status"] == "initializing" and lines[0]["progress"] == 0
    assert {"progress", "status", "message"} <= set(lines[1])
    assert lines[-1]["status"] == "completed" and lines[-1]["progress"] == 100
    assert lines[-1]["result"]
    # Another kind's route does not serve it.
    other = httpx.get(f"{stream_server.url}/api/v1/builds/{job_id}/stream", headers=h)
    assert other.status_code == 404


def test_streams_refuse_other_tenants_and_bad_tokens(
    stream_server, live_client, tenant, database_url
):
    h = tenant["headers"]
    job_id = submit(live_client, h, "/api/v1/builds", {"project_name": "p", "goal": "g"})
    stranger = live_tenant(live_client.application, database_url)
    base = stream_server.url
    for url, headers, status in [
        (f"{base}/api/v1/jobs/{job_id}/stream", stranger["headers"], 404),
        (f"{base}/api/v1/builds/{job_id}/stream", stranger["headers"], 404),
        (f"{base}/api/v1/jobs/{uuid.uuid4()}/stream", h, 404),
        (f"{base}/api/v1/jobs/{job_id}/stream", {"Authorization": "Bearer nonsense"}, 401),
        (f"{base}/api/v1/jobs/{job_id}/stream?token=nonsense", {}, 401),
        (f"{base}/api/v1/jobs/{job_id}/stream", {}, 401),
        (f"{base}/api/v1/jobs/{job_id}/stream", {**h, "Last-Event-ID": "x"}, 422),
    ]:
        response = httpx.get(url, headers=headers, timeout=10)
        assert response.status_code == status, (url, response.text)
        assert response.headers["content-type"].startswith("application/json")
        assert response.json()["error"]["code"]  # the envelope, not a stream

    ws_base = base.replace("http", "ws")
    for url, code in [
        (f"{ws_base}/api/ws/build/{job_id}?token={token_of(stranger)}", 1008),
        (f"{ws_base}/api/ws/analysis/{job_id}?token={token_of(tenant)}", 1008),  # not an analysis
        (f"{ws_base}/api/ws/build/{job_id}?token=expired.or.bad", 4401),
        (f"{ws_base}/api/ws/build/{job_id}", 4401),
    ]:
        assert close_code(url) == code  # the first frame is the close: no data before it

    ws = websocket.create_connection(f"{ws_base}/api/v1/ws", timeout=10)
    ws.send(json.dumps({"type": "auth", "token": token_of(stranger)}))
    assert json.loads(ws.recv())["type"] == "authenticated"
    ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
    opcode, payload = ws.recv_data()
    assert opcode == websocket.ABNF.OPCODE_CLOSE and int.from_bytes(payload[:2], "big") == 1008
    ws.close()
    wait_terminal(live_client, f"/api/v1/jobs/{job_id}", h)


def close_code(url: str, first_frame: str | None = None) -> int:
    """The close code the server sends before any data frame."""
    ws = websocket.create_connection(url, timeout=10)
    if first_frame is not None:
        ws.send(first_frame)
    opcode, payload = ws.recv_data()
    ws.close()
    assert opcode == websocket.ABNF.OPCODE_CLOSE, (opcode, payload)
    return int.from_bytes(payload[:2], "big")


def test_build_websocket_speaks_seed_004(stream_server, live_client, tenant):
    h = tenant["headers"]
    body = {"project_name": "shop", "goal": "Add JWT auth",
            "parameters": {"components": ["models", "routes"]}}  # fmt: skip
    job_id = submit(live_client, h, "/api/v1/builds", body)
    ws_url = stream_server.url.replace("http", "ws")
    ws = websocket.create_connection(
        f"{ws_url}/api/ws/build/{job_id}?token={token_of(tenant)}", timeout=60
    )
    frames = []
    while True:
        opcode, payload = ws.recv_data()
        if opcode == websocket.ABNF.OPCODE_CLOSE:
            close = int.from_bytes(payload[:2], "big")
            break
        frames.append(json.loads(payload))
    ws.close()
    assert close == 1000
    assert frames[0]["type"] == "connected" and frames[0]["task_id"] == job_id
    progress = [f for f in frames if f["type"] == "progress"]
    assert progress and all({"status", "progress", "timestamp", "data"} <= set(f) for f in progress)
    assert [f["seq"] for f in progress] == sorted(f["seq"] for f in progress)
    assert frames[-1]["type"] == "completion" and frames[-1]["status"] == "completed"
    assert frames[-1]["results"]["components"]
    assert progress[-1]["data"]["files_created"] == 2


def test_multiplexed_websocket_subscribes_and_executes_agents(stream_server, live_client, tenant):
    h = tenant["headers"]
    ws_url = stream_server.url.replace("http", "ws") + "/api/v1/ws"
    assert close_code(ws_url, json.dumps({"type": "subscribe"})) == 4401  # auth comes first
    assert close_code(ws_url, json.dumps({"type": "auth", "token": "bad"})) == 4401

    job_id = submit(live_client, h, "/api/v1/tasks", {"description": "Count the apples"})
    ws = websocket.create_connection(ws_url, timeout=60)
    ws.send(json.dumps({"type": "auth", "token": token_of(tenant)}))
    assert json.loads(ws.recv())["type"] == "authenticated"
    ws.send(json.dumps({"type": "subscribe", "job_id": job_id}))
    ws.send(json.dumps({"type": "chat", "conversation_id": str(uuid.uuid4()), "message": "hi"}))
    frames = collect_until_end(ws, {job_id})
    assert frames[0] == {"type": "subscribed", "job_id": job_id, "after": 0}
    assert any(f["type"] == "error" for f in frames)  # no conversations yet: a clear error
    events = [f for f in frames if f["type"] == "event" and f["job_id"] == job_id]
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    assert events[-1]["event"] == "job.completed" and events[-1]["data"]["status"] == "completed"

    ws.send(json.dumps({"type": "agent_execute", "agent_id": str(tenant["agent_id"]),
                        "input": "Analyse the sales"}))  # fmt: skip
    started = json.loads(ws.recv())
    assert started["type"] == "agent_execution_started"
    frames = collect_until_end(ws, {started["job_id"]})
    end = [f for f in frames if f["type"] == "end"][0]
    assert end["job"]["kind"] == "agent_run" and end["job"]["status"] == "completed"
    ws.close()


def collect_until_end(ws: Any, job_ids: set[str]) -> list[dict[str, Any]]:
    frames, waiting = [], set(job_ids)
    while waiting:
        frame = json.loads(ws.recv())
        frames.append(frame)
        if frame["type"] == "end":
            waiting.discard(frame["job_id"])
    return frames


def test_socketio_receives_task_progress_budget_alerts_and_emergency_pause(
    stream_server, live_client, tenant, database_url
):
    h = tenant["headers"]
    stranger = live_tenant(live_client.application, database_url)
    received: dict[str, list[tuple[str, dict]]] = {"mine": [], "theirs": []}

    def client_for(name: str, token: str) -> socketio.Client:
        client = socketio.Client(reconnection=False)
        for event in ("task_progress", "agent_status", "budget_alert", "emergency_pause", "error"):
            client.on(event, lambda data, event=event: received[name].append((event, data)))
        client.connect(stream_server.url, auth={"token": token}, transports=["websocket"],
                       wait_timeout=20)  # fmt: skip
        return client

    with pytest.raises(socketio.exceptions.ConnectionError):
        socketio.Client(reconnection=False).connect(
            stream_server.url, auth={"token": "bad"}, transports=["websocket"], wait_timeout=20
        )
    mine, theirs = client_for("mine", token_of(tenant)), client_for("theirs", token_of(stranger))
    try:
        # A warn limit whose alert threshold the first task crosses.
        limit = {"name": "tiny", "scope_type": "organization", "period": "daily",
                 "amount_usd": "0.000001", "alert_threshold": "0.5", "action_on_exceed": "warn"}  # fmt: skip
        assert live_client.post("/api/v1/budget/limits", json=limit, headers=h).status_code == 201
        job_id = submit(live_client, h, "/api/v1/tasks",
                        {"description": "Tally", "agent_id": str(tenant["agent_id"])})  # fmt: skip
        wait_terminal(live_client, f"/api/v1/jobs/{job_id}", h)
        assert live_client.post("/api/v1/emergency/pause-all", headers=h).status_code == 200
        deadline = time.monotonic() + 30
        kinds: set[str] = set()
        while (
            time.monotonic() < deadline
            and not {"task_progress", "budget_alert", "emergency_pause", "agent_status"} <= kinds
        ):
            time.sleep(0.1)
            kinds = {k for k, _ in received["mine"]}
        progress = [
            d for k, d in received["mine"] if k == "task_progress" and d["task_id"] == job_id
        ]
        # The client runs each handler on a thread of its own, so the last two events may be
        # appended either way round: the completed one is there, not necessarily last.
        assert any(d["status"] == "completed" and d["progress"] == 100 for d in progress), progress
        alerts = [d for k, d in received["mine"] if k == "budget_alert"]
        assert alerts and alerts[0]["level"] in ("warning", "critical")
        assert {"scope", "current", "limit", "percentage", "message"} <= set(alerts[0])
        # Seed 001's example writes money as numbers; the exact strings ride along.
        assert isinstance(alerts[0]["current"], float) and isinstance(alerts[0]["limit"], float)
        assert alerts[0]["amount_usd"] == "0.000001" and isinstance(alerts[0]["spent"], str)
        assert any(k == "emergency_pause" for k, _ in received["mine"])
        statuses = [d["status"] for k, d in received["mine"] if k == "agent_status"]
        assert "working" in statuses and "idle" in statuses
        assert received["theirs"] == []  # rooms are per organization
    finally:
        live_client.post("/api/v1/emergency/resume-all", headers=h)
        mine.disconnect()
        theirs.disconnect()


def test_socketio_clients_on_two_stream_processes_each_get_every_event_once(
    stream_server, live_client, tenant
):
    """Each stream process derives the organization's task_progress from the job channels
    it hears and emits it to its own clients only: a client on either of two processes
    gets each of the job's phase, step and job events once, in order."""
    second = StreamServer(log_name="stream-2.log").start()
    received: list[list[dict]] = [[], []]
    clients = []
    try:
        for server, into in zip((stream_server, second), received, strict=True):
            client = socketio.Client(reconnection=False)
            client.on("task_progress", into.append)
            client.connect(server.url, auth={"token": token_of(tenant)},
                           transports=["websocket"], wait_timeout=20)  # fmt: skip
            clients.append(client)
        job_id = submit(live_client, tenant["headers"])
        wait_terminal(live_client, f"/api/v1/jobs/{job_id}", tenant["headers"])
        expected = [
            seq
            for seq, kind in history_seqs(live_client, tenant["headers"], job_id)
            # job.queued is written with the job, before anyone can follow it: not published.
            if (kind.startswith("job.") or kind in live.PROGRESS_EVENTS) and kind != "job.queued"
        ]
        assert len(expected) == 3 * 4 + 2  # each phase and step started and completed

        def seqs(into: list[dict]) -> list[int]:
            return [d["seq"] for d in into if d["task_id"] == job_id]

        wait_until(lambda: all(len(seqs(r)) >= len(expected) for r in received), 30)
        time.sleep(0.5)  # a duplicate would come right behind
        for into in received:
            # The client runs each handler on a thread of its own: order checked by seq.
            assert sorted(seqs(into)) == expected, into
    finally:
        for client in clients:
            client.disconnect()
        second.stop()


# -- a Redis outage mid-stream ------------------------------------------------------------


class PrivateRedis:
    def __init__(self, workdir: Path) -> None:
        self.port, self.dir = free_port(), workdir
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", "--port", str(self.port),
             "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
        )  # fmt: skip
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1):
                    return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def test_redis_restarted_mid_stream_loses_nothing(live_client, tenant, tmp_path, monkeypatch):
    """The stream process and its worker publish through a Redis of their own, which is
    killed mid-job and started again: the stream keeps going from the rows, then live."""
    import redis

    redis_server = PrivateRedis(tmp_path)
    redis_server.start()
    queue_prefix = f"r{uuid.uuid4().hex[:8]}"
    env = {"REDIS_URL": f"redis://127.0.0.1:{redis_server.port}/0",
           "BATON_QUEUE_PREFIX": queue_prefix, "BATON_STREAM_POLL_SECONDS": "0.5"}  # fmt: skip
    server = StreamServer(env, "stream-redis.log").start()
    pool = WorkerPool()
    try:
        # The worker reads its queues and Redis from the environment it is started with.
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        reset_settings_cache()
        pool.start(count=1, concurrency=1)
        monkeypatch.undo()
        reset_settings_cache()
        h = tenant["headers"]
        body = {"topic": "Outage", "custom_phases": [f"phase {n}" for n in range(1, 9)],
                "settings": {"stream": True, "ai_model": "sim/slow-stream"}}  # fmt: skip
        # Submitted through the stream process: its queues are the private worker's.
        accepted = httpx.post(f"{server.url}/api/v1/orchestrate", json=body, headers=h, timeout=30)
        assert accepted.status_code == 202, accepted.text
        job_id = accepted.json()["job_id"]
        events: list[Any] = []

        def follow() -> None:
            read_sse(f"{server.url}/api/v1/jobs/{job_id}/stream", h, timeout=120, into=events)

        def count(kind: str) -> int:
            return sum(e.event == kind for e in events)

        # Through the stream process (the whole API): it enqueues on the private worker's
        # queues, and its rate limits fall back to memory while Redis is away.
        def pause() -> None:  # the job stops before its next step: the test sets the pace
            paused = count("job.paused")
            response = httpx.post(f"{server.url}/api/v1/emergency/pause-all", headers=h, timeout=30)
            assert response.status_code == 200, response.text
            wait_until(lambda: count("job.paused") > paused, 60)
            # and the step in flight has finished (a resume races it otherwise)
            wait_until(lambda: "running" not in step_statuses(), 60)

        def step_statuses() -> list[str]:
            body = live_client.get(f"/api/v1/jobs/{job_id}", headers=h).get_json()
            return [s["status"] for p in body["phases"] for s in p["steps"]]

        def resume() -> None:
            response = httpx.post(
                f"{server.url}/api/v1/emergency/resume-all", headers=h, timeout=30
            )
            assert response.status_code == 200, response.text

        reader = threading.Thread(target=follow)
        reader.start()
        wait_until(lambda: count("phase.completed") >= 1, 90)
        pause()
        redis_server.stop()
        down = len(events)
        done = count("phase.completed")
        resume()
        wait_until(lambda: count("phase.completed") >= done + 2, 90)  # from the rows alone
        pause()
        rows_only = events[down:]
        redis_server.start()
        probe = redis.Redis(port=redis_server.port)
        wait_until(lambda: probe.pubsub_numpat() >= 1, 30)  # the hub subscribed again
        probe.close()
        resumed_at = len(events)
        resume()
        reader.join(timeout=180)
        assert not reader.is_alive()

        seen = numbered(events)
        assert [s for s, _ in seen] == list(range(1, len(seen) + 1))
        assert seen == history_seqs(live_client, h, job_id)
        assert seen[-1][1] == "job.completed" and events[-1].event == "end"
        # While Redis was down, rows kept coming (no live text); once back, live text again.
        assert any(e.event == "phase.completed" for e in rows_only)
        assert not any(e.event == "step.delta" for e in rows_only)
        assert any(e.event == "step.delta" for e in events[resumed_at:])
    finally:
        pool.stop()
        server.stop()
        redis_server.stop()


def wait_until(condition: Any, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError("timed out")


def test_baton_watch_follows_a_job_and_survives_a_restart(live_client, tenant, tmp_path):
    """``baton watch`` prints each phase once and the result, tokens and cost, even when
    the stream process dies in the middle (it resumes with Last-Event-ID)."""
    h = tenant["headers"]
    body = {"topic": "Watch me", "custom_phases": ["alpha", "beta", "gamma", "delta"],
            "settings": {"ai_model": "sim/slow"}}  # fmt: skip
    job_id = submit(live_client, h, body=body)
    # Held still (emergency pause) while the stream process dies, so the test sets the pace.
    assert live_client.post("/api/v1/emergency/pause-all", headers=h).status_code == 200
    server = StreamServer(log_name="stream-watch.log").start()
    out = tmp_path / "watch.txt"
    try:
        with open(out, "w") as sink:
            watch = subprocess.Popen(
                [sys.executable, "-m", "baton.cli", "watch", job_id, "--url", server.url,
                 "--token", token_of(tenant), "--timeout", "120"],
                cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT,
                env={**os.environ, "COLUMNS": "120", "TERM": "dumb", "PYTHONUNBUFFERED": "1"},
            )  # fmt: skip
        wait_until(lambda: "job paused" in out.read_text(), 90)
        server.crash()
        wait_until(lambda: "connection lost" in out.read_text(), 30)
        server.start()

        def settled() -> bool:  # no step in flight: a resume would race it
            body = live_client.get(f"/api/v1/jobs/{job_id}", headers=h).get_json()
            return all(s["status"] != "running" for p in body["phases"] for s in p["steps"])

        wait_until(settled, 60)
        assert live_client.post("/api/v1/emergency/resume-all", headers=h).status_code == 200
        assert watch.wait(timeout=150) == 0, out.read_text()
    finally:
        server.stop()
    text = out.read_text()
    for phase in ("Alpha", "Beta", "Gamma", "Delta"):
        assert text.count(f"✓ {phase}") == 1, text
    assert "orchestration completed: 4/4 steps" in text and "tokens" in text and "cost $" in text
