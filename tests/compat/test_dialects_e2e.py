"""One end-to-end flow per document through its dialect, with real Celery workers and the
stream process (gunicorn, gevent): sign in, create, run to completion, read the results,
and follow the stream where the document streams. The job is the canonical API's too."""

from __future__ import annotations

import json
import uuid

import pytest
import websocket

from api.compat.phase2 import DIALECT as PHASE2
from api.compat.vel_tutor import DIALECT as VEL_TUTOR
from models import Organization
from models.db import session_factory, transaction
from tests import factories
from tests.helpers import wait_for
from tests.test_streams_e2e import read_sse, stream_server  # noqa: F401 - the fixture

pytestmark = pytest.mark.usefixtures("workers")
TERMINAL = {"completed", "failed", "cancelled"}


def live_user(database_url: str, role: str = "admin") -> dict:
    """A committed organization and user with credentials (the workers see its rows)."""
    with transaction(session_factory(database_url)) as session:
        org = factories.organization(session)
        user = factories.user(session, org, role=role)
        return {"org_id": org.id, "email": user.email, "username": user.username}


@pytest.fixture
def client(live_client):
    live_client.application.config["BATON_LOGIN_RATE_LIMIT"] = "1000/minute"
    return live_client


def _ws_frames(url: str) -> tuple[list[dict], int]:
    ws = websocket.create_connection(url, timeout=60)
    frames = []
    try:
        while True:
            opcode, payload = ws.recv_data()
            if opcode == websocket.ABNF.OPCODE_CLOSE:
                return frames, int.from_bytes(payload[:2], "big")
            frames.append(json.loads(payload))
    finally:
        ws.close()


def test_phase2_build_and_analysis_end_to_end(client, stream_server, database_url):  # noqa: F811
    user = live_user(database_url, role="member")
    login = client.post(
        "/auth/login", json={"username": user["username"], "password": factories.DEFAULT_PASSWORD}
    )
    assert login.status_code == 200
    token = login.get_json()["access_token"]
    headers = {"Authorization": f"Bearer {token}"}

    created = client.post(
        "/api/build/",
        json={"project_name": "my-app", "goal": "Add user authentication",
              "parameters": {"framework": "fastapi", "components": ["models", "routes"]}},
        headers=headers,
    )  # fmt: skip
    assert created.status_code == 202, created.get_json()
    task_id = created.get_json()["task_id"]
    assert created.get_json()["status"] == "initializing"

    # Follow it over the document's WebSocket, under the dialect's base.
    ws_base = stream_server.url.replace("http", "ws")
    frames, close = _ws_frames(f"{ws_base}{PHASE2.base}/api/ws/build/{task_id}?token={token}")
    assert close == 1000
    assert frames[0] == {**frames[0], "type": "connected", "task_id": task_id}
    progress = [f for f in frames if f["type"] == "progress"]
    assert progress and {f["status"] for f in progress} <= {"initializing", "running"}
    assert all(isinstance(f["progress"], int) for f in progress if f.get("progress") is not None)
    assert frames[-1]["type"] == "completion" and frames[-1]["status"] == "completed"
    assert frames[-1]["results"]["generated_files"] == ["models", "routes"]
    # The document's completion figures, from the test phase's report (sim writes them).
    assert isinstance(frames[-1]["results"]["tests_passed"], int)
    assert 0 <= frames[-1]["results"]["test_coverage"] <= 100

    status = client.get(f"/api/build/{task_id}", headers=headers).get_json()
    assert status["status"] == "completed" and status["progress"] == 100
    assert status["created_by"] == user["username"]
    assert status["results"]["generated_files"] == ["models", "routes"]
    history = client.get("/api/build/?limit=10&offset=0", headers=headers).get_json()
    assert [b["task_id"] for b in history["builds"]] == [task_id]
    canonical = client.get(f"/api/v1/jobs/{task_id}", headers=headers).get_json()
    assert canonical["id"] == task_id and canonical["status"] == "completed"
    again = client.delete(f"{PHASE2.base}/api/build/{task_id}", headers=headers)
    assert again.status_code == 409 and again.get_json()["error"] == "conflict"

    analysis = client.post(
        f"{PHASE2.base}/api/analysis/",
        json={"project_name": "my-project", "analysis_types": ["quality", "security", "types"]},
        headers=headers,
    )
    assert analysis.status_code == 202, analysis.get_json()
    analysis_id = analysis.get_json()["analysis_id"]
    done = wait_for(
        client, f"/api/analysis/{analysis_id}", headers, lambda b: b["status"] in TERMINAL
    )
    assert done["status"] == "completed" and done["performed_by"] == user["username"]
    assert isinstance(done["security_issues"], list) and isinstance(done["recommendations"], list)
    # The document's items: issue, severity, line, recommendation (sim writes one finding).
    assert done["security_issues"] and set(done["security_issues"][0]) == {
        "issue", "severity", "line", "recommendation"
    }  # fmt: skip
    assert done["security_issues"][0]["severity"] == "high"
    assert isinstance(done["security_issues"][0]["line"], int)
    frames, close = _ws_frames(f"{ws_base}/api/ws/analysis/{analysis_id}?token={token}")
    assert close == 1000 and frames[-1]["type"] == "completion"

    # "Users can only view their own builds": another member of the organization is
    # refused over REST (403) and over the WebSocket (closed before any frame).
    with transaction(session_factory(database_url)) as session:
        other = factories.user(session, session.get(Organization, user["org_id"]), role="member")
        other_name = other.username
    other_token = client.post(
        "/auth/login", json={"username": other_name, "password": factories.DEFAULT_PASSWORD}
    ).get_json()["access_token"]
    theirs = client.get(f"/api/build/{task_id}", headers={"Authorization": f"Bearer {other_token}"})
    assert theirs.status_code == 403 and theirs.get_json()["error"] == "forbidden"
    for path in (f"/api/ws/build/{task_id}", f"{PHASE2.base}/api/ws/analysis/{analysis_id}"):
        frames, close = _ws_frames(f"{ws_base}{path}?token={other_token}")
        assert (frames, close) == ([], 1008)


def test_vel_tutor_task_end_to_end(client, stream_server, database_url):  # noqa: F811
    base = VEL_TUTOR.base
    user = live_user(database_url)
    login = client.post(
        f"{base}/auth/login", json={"email": user["email"], "password": factories.DEFAULT_PASSWORD}
    )
    assert login.status_code == 200
    token = login.get_json()["token"]
    headers = {"Authorization": f"Bearer {token}"}
    agent = client.post(
        f"{base}/agents",
        json={"name": "Coder", "type": "mcp_orchestrator", "config": {"providers": ["sim"]}},
        headers=headers,
    ).get_json()
    test = client.post(f"{base}/agents/{agent['id']}/test", json={}, headers=headers)
    assert test.status_code == 200 and test.get_json()["status"] == "completed"

    created = client.post(
        f"{base}/tasks",
        json={"agent_id": agent["id"], "description": "Generate Python code for data analysis",
              "priority": "high", "parameters": {"task_type": "code_generation"}},
        headers=headers,
    )  # fmt: skip
    assert created.status_code == 201 and created.get_json()["status"] == "pending"
    task_id = created.get_json()["id"]

    # The document's SSE stream, followed live to the end over real HTTP.
    events = read_sse(f"{stream_server.url}{base}/tasks/{task_id}/stream", headers)
    lines = [json.loads(e.data) for e in events if e.data]
    assert lines and all({"status", "message"} <= set(line) for line in lines)
    assert {line["status"] for line in lines[:-1]} <= {"initializing", "executing"}
    assert lines[-1]["status"] == "completed" and lines[-1]["progress"] == 100
    assert lines[-1]["result"]

    task = client.get(f"{base}/tasks/{task_id}", headers=headers).get_json()
    assert task["status"] == "completed" and task["result"]["provider_used"] == "sim"
    assert task["history"][0] == {**task["history"][0], "step": "initialization"}
    assert task["history"][-1]["status"] == "completed"
    listed = client.get(f"{base}/tasks?status=completed", headers=headers).get_json()
    assert [t["id"] for t in listed["data"]] == [task_id] and listed["meta"]["total"] == 1
    canonical = client.get(f"/api/v1/jobs/{task_id}", headers=headers).get_json()
    assert canonical["id"] == task_id and canonical["kind"] == "task"

    # Another organization's id is the document's not-found; a user is not an admin.
    stranger = live_user(database_url, role="member")
    theirs = client.post(
        f"{base}/auth/login",
        json={"email": stranger["email"], "password": factories.DEFAULT_PASSWORD},
    ).get_json()
    their_headers = {"Authorization": f"Bearer {theirs['token']}"}
    assert theirs["user"]["role"] == "user"
    for path in (f"/tasks/{task_id}", f"/agents/{agent['id']}"):
        missing = client.get(f"{base}{path}", headers=their_headers)
        assert missing.status_code == 404 and missing.get_json()["code"] == "NOT_FOUND"
    refused = client.get(f"{base}/users", headers=their_headers)
    assert refused.status_code == 403 and refused.get_json()["code"] == "UNAUTHORIZED"
    gone = client.get(f"{base}/tasks/{uuid.uuid4()}/stream", headers=their_headers)
    assert gone.status_code == 404 and gone.get_json()["code"] == "NOT_FOUND"
