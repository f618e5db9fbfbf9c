"""Idempotency-Key with two real concurrent requests: the duplicate that arrives while
the first is still running is a 409; once the first answered, retries replay it."""

from __future__ import annotations

import threading
import time
import uuid

import pytest
import sqlalchemy as sa

from models import Agent, IdempotencyKey, Job
from models.db import session_factory, transaction
from tests.helpers import live_tenant

pytestmark = pytest.mark.usefixtures("workers")


def test_a_duplicate_in_flight_is_409_then_the_answer_is_replayed(live_client, database_url):
    tenant = live_tenant(live_client.application, database_url)
    with transaction(session_factory(database_url)) as session:
        session.execute(
            sa.update(Agent)
            .where(Agent.id == tenant["agent_id"])
            .values(config={"providers": ["sim"], "model_preferences": {"default": "sim/slow"}})
        )
    key = f"exec-{uuid.uuid4()}"
    headers = {**tenant["headers"], "Idempotency-Key": key}
    path = f"/api/v1/agents/{tenant['agent_id']}/execute"
    body = {"input": "Summarise Q4", "wait_seconds": 30}
    first: dict = {}

    def run_first() -> None:
        response = live_client.post(path, json=body, headers=headers)
        first.update(status=response.status_code, body=response.get_json())

    thread = threading.Thread(target=run_first)
    thread.start()
    try:
        # The first request has claimed the key and is waiting on its sim/slow run.
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with transaction(session_factory(database_url)) as session:
                if session.scalar(sa.select(IdempotencyKey.key).where(IdempotencyKey.key == key)):
                    break
            time.sleep(0.05)
        # A sim/slow call takes about a second: the first is still in flight.
        duplicate = live_client.post(path, json=body, headers=headers)
        assert duplicate.status_code == 409, duplicate.get_json()
        assert duplicate.get_json()["error"]["code"] == "CONFLICT"
    finally:
        thread.join(timeout=60)
    assert first["status"] == 200, first
    replay = live_client.post(path, json=body, headers=headers)
    assert replay.status_code == 200
    assert replay.headers["Idempotent-Replayed"] == "true"
    assert replay.get_json() == first["body"]
    with transaction(session_factory(database_url)) as session:
        runs = session.scalar(
            sa.select(sa.func.count()).select_from(Job).where(Job.agent_id == tenant["agent_id"])
        )
    assert runs == 1
