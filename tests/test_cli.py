"""The ``baton`` console script's own process handling, on the test run's PostgreSQL and
Redis (the same commands as the embedded mode, other URLs)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from decimal import Decimal

import httpx
import pytest

from tests.conftest import ROOT
from tests.processes import free_port


def _children(pid: int) -> list[int]:
    out = subprocess.run(
        ["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True, check=False
    )
    return [int(p) for p in out.stdout.split()]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for our purposes (its parent reaps it).
    with open(f"/proc/{pid}/stat") as stat:
        return stat.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.usefixtures("database_url")
def test_baton_up_stops_its_api_and_worker_on_sigterm(tmp_path):
    port = free_port()
    env = {**os.environ, "BATON_HOME": str(tmp_path)}
    up = subprocess.Popen(
        [sys.executable, "-m", "baton.cli", "up", "--port", str(port), "--stream-port", str(free_port())],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120  # three processes start at once on a busy machine
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/v1/health/live").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("baton up did not come up")
        children = _children(up.pid)
        assert len(children) == 3  # the API, the stream process (gunicorn) and the worker

        up.send_signal(signal.SIGTERM)
        assert up.wait(timeout=40) == 130
        deadline = time.monotonic() + 10
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not [c for c in children if _alive(c)]
    finally:
        if up.poll() is None:
            up.kill()


# What the embedded default reads from its environment: none of it (SQLite, the
# filesystem broker, no Redis), as on a fresh machine.
_SERVICE_VARIABLES = ("DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND", "REDIS_URL")


def test_the_readmes_first_command_runs_the_demo_on_the_embedded_default(tmp_path):
    """`baton demo --embedded`: the 5-phase orchestration to its end on SQLite and the
    filesystem broker (the engine's PostgreSQL-only statements have their SQLite path)."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_VARIABLES}
    env["BATON_HOME"] = str(tmp_path)
    demo = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo", "--embedded", "--timeout", "180"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "orchestration completed: 5/5 steps" in demo.stdout
    assert (tmp_path / "baton.db").exists()


def test_an_embedded_budget_limit_holds_and_settles_a_call(tmp_path):
    """`baton up` on the embedded default with a block limit: the call is held and settled
    on SQLite (its statements one by one) and the window ends with the spend, nothing held."""
    env = {k: v for k, v in os.environ.items() if k not in _SERVICE_VARIABLES}
    env["BATON_HOME"] = str(tmp_path)
    port = free_port()
    up = subprocess.Popen(
        [sys.executable, "-m", "baton.cli", "up", "--port", str(port), "--stream-port", str(free_port())],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}/api/v1"
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{base}/health/live").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.3)
        else:
            pytest.fail("baton up did not come up")
        registered = httpx.post(
            f"{base}/auth/register",
            json={
                "email": "ada@example.com",
                "password": "correct horse",
                "organization_name": "A",
            },
        )
        headers = {"Authorization": f"Bearer {registered.json()['access_token']}"}
        limit = httpx.post(
            f"{base}/budget/limits",
            json={"name": "daily", "scope_type": "organization", "amount_usd": "10", "period": "daily"},
            headers=headers,
        )  # fmt: skip
        assert limit.status_code == 201, limit.text
        task = httpx.post(
            f"{base}/tasks", json={"title": "t", "description": "hello"}, headers=headers
        )
        assert task.status_code == 202, task.text
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            job = httpx.get(f"{base}/jobs/{task.json()['id']}", headers=headers).json()
            if job["status"] in ("completed", "failed", "cancelled"):
                break
            time.sleep(0.5)
        assert job["status"] == "completed", job
        window = httpx.get(f"{base}/budget/limits/{limit.json()['id']}", headers=headers).json()
        assert Decimal(window["spent"]) > 0 and Decimal(window["reserved"]) == 0, window
    finally:
        up.send_signal(signal.SIGTERM)
        up.wait(timeout=60)
