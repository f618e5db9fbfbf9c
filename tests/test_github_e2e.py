"""Seed 001's workflow end to end: signed GitHub deliveries drive the project, the
issue's role tasks run as real jobs on real workers, and every step reaches a subscriber
as a signed webhook."""

from __future__ import annotations

import time

import pytest

from models.db import session_factory, transaction
from orchestration import webhooks
from tests import factories
from tests.local_http import LocalServer
from tests.test_github import REPO, issue_payload, pr_payload, send

pytestmark = pytest.mark.usefixtures("workers")
SECRET = "whsec_" + "d29ya2Zsb3ctc2VjcmV0LXdvcmtmbG93"


def wait_until(check, timeout=90.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.2)
    raise AssertionError("timed out")


def test_an_issue_becomes_agent_work_and_every_step_is_a_signed_webhook(live_client, database_url):
    receiver = LocalServer()
    try:
        with transaction(session_factory(database_url)) as session:
            org = factories.organization(session)
            user = factories.user(session, org, role="manager")
            project = factories.project(
                session, org, github_repo=REPO, github_installation_id="42", github_app_id="7"
            )
            for role in ("architect", "coder"):
                factories.agent(session, org, name=role, type=role, project_id=project.id)
            h = factories.auth_headers(live_client.application, user)
        base = f"/api/v1/projects/{project.id}"
        created = live_client.post(
            "/api/v1/webhooks",
            json={"url": f"{receiver.url}/baton", "events": ["*"], "secret": SECRET},
            headers=h,
        )
        assert created.status_code == 201, created.get_json()

        # GitHub opens an issue and a comment on it (signed deliveries).
        assert send(live_client, "issues", issue_payload(number=12)).status_code == 200
        comment = {**issue_payload(number=12, action="created"), "comment": {"id": 1}}
        assert send(live_client, "issue_comment", comment).status_code == 200
        issue = live_client.get(f"{base}/issues", headers=h).get_json()["items"][0]

        # Starting it gives each role's agent a task, run as a job by the workers.
        started = live_client.post(f"{base}/issues/{issue['id']}/start", headers=h)
        assert started.status_code == 201, started.get_json()
        tasks = started.get_json()["items"]
        assert [t["assigned_to"]["type"] for t in tasks] == ["architect", "coder"]

        def all_in_review():
            listed = live_client.get(f"{base}/issues/{issue['id']}/tasks", headers=h).get_json()
            return all(t["status"] == "review" for t in listed["items"]) and listed

        reviewed = wait_until(all_in_review)
        assert all(t["progress"] == 100 for t in reviewed["items"])
        for task in tasks:
            job = live_client.get(f"/api/v1/jobs/{task['job_id']}", headers=h).get_json()
            assert job["status"] == "completed" and job["project_id"] == str(project.id)

        # A pull request closing the issue, then a person completes a task.
        assert send(live_client, "pull_request", pr_payload(body="Closes #12")).status_code == 200
        done = live_client.post(f"{base}/tasks/{tasks[0]['id']}/complete", headers=h)
        assert done.status_code == 200 and done.get_json()["status"] == "completed"
        assert done.get_json()["pr"]["number"] == 9

        expected = {
            "github.issue",
            "project.task.created",
            "job.completed",
            "github.pull_request",
            "project.task.completed",
        }

        def seen():
            types = {r.json()["type"] for r in receiver.received}
            return expected <= types and types

        wait_until(seen)
        for request in receiver.received:
            assert webhooks.verify(SECRET, request.headers, request.body)
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == len(set(ids))  # each delivered once
    finally:
        receiver.close()
