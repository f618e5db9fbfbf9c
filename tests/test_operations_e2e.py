"""What operators see (issue 8): Celery's own events from the shared real workers say
FAILURE for a failed step and REVOKED for a cancelled one, and name the job's kind, id,
phase and step; cancel ends the phase in flight and records a call that returns late."""

from __future__ import annotations

import threading
import time
import uuid
from collections import defaultdict
from typing import Any

import httpx
import pytest
import sqlalchemy as sa

from models import JobPhase, JobStep, UsageRecord
from models.db import session_factory, transaction
from tests.helpers import live_tenant, wait_for, wait_terminal
from tests.processes import free_port, wait_http

pytestmark = pytest.mark.usefixtures("workers")


class CeleryEvents:
    """Celery's event stream, as Flower reads it (``app.events.Receiver``)."""

    def __init__(self) -> None:
        from baton.celery_app import app

        self.app = app
        self.by_task: dict[str, list[dict[str, Any]]] = defaultdict(list)
        self.seen = threading.Event()
        self.receiver = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()
        assert self.seen.wait(30), "no Celery event arrived"
        # The workers send task events while someone watches (celeryconfig): switched on
        # as Flower switches them on, each worker's answer awaited.
        assert app.control.broadcast("enable_events", reply=True, timeout=1.0)

    def _run(self) -> None:
        with self.app.connection_for_read() as connection:
            self.receiver = self.app.events.Receiver(connection, handlers={"*": self._on})
            self.receiver.capture(limit=None, timeout=None, wakeup=True)

    def _on(self, event: dict[str, Any]) -> None:
        self.seen.set()
        if event.get("uuid"):
            self.by_task[event["uuid"]].append(event)

    def types(self, task_id: str) -> list[str]:
        return [e["type"] for e in self.by_task.get(task_id, [])]

    def wait_for(self, task_id: str, type_: str, timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for event in list(self.by_task.get(task_id, [])):
                if event["type"] == type_:
                    return event
            time.sleep(0.1)
        raise AssertionError(f"no {type_} for {task_id}: {self.types(task_id)}")

    def stop(self) -> None:
        if self.receiver is not None:
            self.receiver.should_stop = True
        self.thread.join(timeout=10)


@pytest.fixture
def celery_events():
    events = CeleryEvents()
    yield events
    events.stop()


def steps_of(database_url: str, job_id: str) -> list[JobStep]:
    with transaction(session_factory(database_url)) as s:
        return list(
            s.scalars(
                sa.select(JobStep)
                .join(JobPhase, JobPhase.id == JobStep.phase_id)
                .where(JobStep.job_id == uuid.UUID(job_id))
                .order_by(JobPhase.position, JobStep.position)
            )
        )


def test_a_failed_step_is_a_failure_event_named_after_its_job(
    live_client, database_url, celery_events
):
    from baton.celery_app import app

    tenant = live_tenant(live_client.application, database_url)
    h = tenant["headers"]
    accepted = live_client.post(
        "/api/v1/tasks",
        json={"description": "fails", "settings": {"ai_model": "sim/error"}},
        headers=h,
    ).get_json()
    assert wait_terminal(live_client, accepted["location"], h)["status"] == "failed"
    (step,) = steps_of(database_url, accepted["id"])

    received = celery_events.wait_for(step.celery_task_id, "task-received")
    assert received["name"] == "baton.step.run[task/Execution/execution]", received
    assert f"job={accepted['id']}" in received["args"] and "kind=task" in received["args"]
    assert "phase='Execution'" in received["args"] and "step='execution'" in received["args"]
    failed = celery_events.wait_for(step.celery_task_id, "task-failed")
    assert "StepFailed" in failed["exception"]
    assert app.AsyncResult(step.celery_task_id).state == "FAILURE"


def test_cancel_ends_the_phase_in_flight_and_records_the_late_answer(
    live_client, database_url, celery_events
):
    from baton.celery_app import app

    tenant = live_tenant(live_client.application, database_url)
    h = tenant["headers"]
    accepted = live_client.post(
        "/api/v1/orchestrate",
        json={
            "topic": "cancel me",
            "custom_phases": ["one", "two", "three"],
            "settings": {"ai_model": "sim/slow"},
        },
        headers=h,
    ).get_json()
    wait_for(
        live_client,
        f"/api/v1/jobs/{accepted['id']}",
        h,
        lambda b: any(e["type"] == "step.started" for e in b["history"]),
    )
    response = live_client.post(f"/api/v1/jobs/{accepted['id']}/cancel", headers=h)
    assert response.status_code == 200, response.get_json()

    # The call in flight comes back after the cancel: its answer and cost are kept on the
    # cancelled step, the ledger has it, and the history says so.
    body = wait_for(
        live_client,
        f"/api/v1/jobs/{accepted['id']}",
        h,
        lambda b: any(e["type"] == "step.returned_after_stop" for e in b["history"]),
    )
    assert body["status"] == "cancelled"
    assert {p["status"] for p in body["phases"]} == {"cancelled"}  # none left running
    late = next(e for e in body["history"] if e["type"] == "step.returned_after_stop")["data"]
    assert late["job_status"] == "cancelled" and late["recorded_in_ledger"] is True
    first, *rest = steps_of(database_url, accepted["id"])
    assert first.status == "cancelled" and first.output and first.cost > 0
    assert {s.status for s in rest} == {"cancelled"}
    with transaction(session_factory(database_url)) as s:
        (row,) = s.scalars(sa.select(UsageRecord).where(UsageRecord.step_id == first.id))
    assert row.call_key == late["call_key"] and row.cost == first.cost

    # Celery's view: the step's task is REVOKED, not STARTED for ever.
    celery_events.wait_for(first.celery_task_id, "task-revoked")
    assert "task-succeeded" not in celery_events.types(first.celery_task_id)
    assert app.AsyncResult(first.celery_task_id).state == "REVOKED"


def test_a_cancelled_chord_phase_leaves_no_chord_unlock_retrying_in_embedded_mode(tmp_path):
    """``baton up`` with no services: SQLite results, so a chord waits through Celery's
    ``chord_unlock`` polling. Its steps stopped by a cancel are stored REVOKED, so the
    poll ends instead of retrying every second for ever."""
    import os
    import signal
    import subprocess
    import sys

    import httpx

    from tests.faults import free_port, wait_until

    port = free_port()
    env = {**os.environ, "BATON_HOME": str(tmp_path)}
    for name in ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL"):
        env.pop(name)
    log = tmp_path / "up.log"
    up = subprocess.Popen(
        [str(os.path.join(os.path.dirname(sys.executable), "baton")), "up", "--port", str(port)],
        env=env, cwd=tmp_path, stdout=log.open("ab"), stderr=subprocess.STDOUT,
        start_new_session=True,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}/api/v1"
    try:

        def live() -> bool:
            try:
                return httpx.get(f"{url}/health/live", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_until(live, 90, "baton up", interval=0.3)
        wait_until(lambda: " ready." in log.read_text(errors="replace"), 60, "the worker")
        http = httpx.Client(base_url=url, timeout=30)
        token = http.post(
            "/auth/register",
            json={
                "email": f"u{uuid.uuid4().hex[:8]}@example.com",
                "password": uuid.uuid4().hex,
                "full_name": "Embedded",
                "organization_name": "Embedded",
            },
        ).json()["access_token"]
        h = {"Authorization": f"Bearer {token}"}
        accepted = http.post(
            "/analyses",
            json={
                "project_name": "shop",
                "analysis_types": ["quality", "security", "types"],
                "settings": {"ai_model": "sim/slow"},
            },
            headers=h,
        ).json()
        job_url = f"/jobs/{accepted['id']}"
        wait_until(
            lambda: any(
                e["type"] == "step.started" for e in http.get(job_url, headers=h).json()["history"]
            ),
            60,
            "a step in flight",
        )
        assert http.post(f"{job_url}/cancel", headers=h).status_code == 200

        def unlock_lines() -> int:
            return log.read_text(errors="replace").count("celery.chord_unlock")

        # The chord's poll ran while the steps were in flight; it must end: no new line
        # for a few seconds, well within a minute.
        wait_until(lambda: unlock_lines() > 0, 30, "chord_unlock to poll")
        seen = [unlock_lines()]

        def settled() -> bool:
            time.sleep(4)
            seen.append(unlock_lines())
            return seen[-1] == seen[-2]

        wait_until(settled, 60, "chord_unlock to stop retrying", interval=0)
        assert http.get(job_url, headers=h).json()["status"] == "cancelled"
        assert "raised unexpected" not in log.read_text(errors="replace")  # all ended cleanly
    finally:
        if up.poll() is None:
            os.killpg(up.pid, signal.SIGTERM)
        try:
            up.wait(timeout=40)
        except subprocess.TimeoutExpired:
            os.killpg(up.pid, signal.SIGKILL)
            up.wait(timeout=10)


def test_flower_switches_the_workers_task_events_on(live_client, database_url, scripts, tmp_path):
    """Unwatched, the workers send no task events (celeryconfig); `baton flower` switches
    them on (every 5 s), so its task list shows a job's step and how it ended."""
    from baton.celery_app import app

    app.control.broadcast("disable_events", reply=True, timeout=1.0)
    port, password = free_port(), f"pw-{uuid.uuid4().hex[:8]}"
    flower = scripts(
        ["flower", f"--port={port}", "--address=127.0.0.1"],
        tmp_path / "flower.log",
        {"FLOWER_BASIC_AUTH": f"ops:{password}"},
    )
    wait_http(f"http://127.0.0.1:{port}/healthcheck", flower)
    tenant = live_tenant(live_client.application, database_url)
    h = tenant["headers"]
    deadline = time.monotonic() + 60
    seen: dict[str, Any] = {}
    while not seen and time.monotonic() < deadline:
        accepted = live_client.post(
            "/api/v1/tasks", json={"description": "watched"}, headers=h
        ).get_json()
        assert wait_terminal(live_client, accepted["location"], h)["status"] == "completed"
        (step,) = steps_of(database_url, accepted["id"])
        for _ in range(20):  # Flower reads the events as they come
            tasks = httpx.get(
                f"http://127.0.0.1:{port}/api/tasks", auth=("ops", password), timeout=10
            ).json()
            if tasks.get(step.celery_task_id, {}).get("state") == "SUCCESS":
                seen = tasks[step.celery_task_id]
                break
            time.sleep(0.25)
    assert seen, f"Flower saw no step's events: {flower.text()[-2000:]}"
    assert seen["name"] == "baton.step.run[task/Execution/execution]"
    assert f"job={accepted['id']}" in seen["args"]
