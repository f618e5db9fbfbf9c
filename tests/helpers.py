"""Polling and live-data helpers for end-to-end tests."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from models.db import session_factory, transaction
from tests import factories
from workers.providers import CompletionRequest

TERMINAL = {"completed", "failed", "cancelled"}


def wait_for(
    client: Any,
    url: str,
    headers: dict[str, str],
    until: Callable[[dict[str, Any]], bool],
    timeout: float = 60.0,
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    body: dict[str, Any] = {}
    while time.monotonic() < deadline:
        response = client.get(url, headers=headers)
        assert response.status_code == 200, response.get_json()
        body = response.get_json()
        if until(body):
            return body
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting on {url}: {body}")


def job_status(body: dict[str, Any]) -> str:
    return body["run"]["status"] if "run" in body else body["status"]


def wait_terminal(
    client: Any, url: str, headers: dict[str, str], timeout: float = 60.0
) -> dict[str, Any]:
    return wait_for(client, url, headers, lambda b: job_status(b) in TERMINAL, timeout)


def live_tenant(app: Any, database_url: str, role: str = "admin") -> dict[str, Any]:
    """A committed organization + user (+ project, agent) and a bearer header for it."""
    with transaction(session_factory(database_url)) as session:
        org = factories.organization(session)
        user = factories.user(session, org, role=role)
        project = factories.project(session, org)
        agent = factories.agent(session, org)
        ids = {"org_id": org.id, "user_id": user.id, "project_id": project.id, "agent_id": agent.id}
        headers = factories.auth_headers(app, user)
    return {**ids, "headers": headers}


def ask(model: str, prompt: str | None = None, **kwargs: Any) -> CompletionRequest:
    # A fresh prompt per call unless given: sim/flaky counts failures per prompt.
    prompt = prompt or f"Review the change {uuid.uuid4().hex}, please."
    kwargs.setdefault("max_tokens", 256)
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": prompt},
    ]
    return CompletionRequest(model=model, messages=messages, **kwargs)
