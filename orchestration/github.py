"""GitHub webhooks in (seed 001): verify, dedupe, then mirror issues and pull requests.

The signature (``X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the raw body>``, secret
GITHUB_WEBHOOK_SECRET) is checked with a constant-time compare before the body is parsed.
``X-GitHub-Delivery`` is written in the same transaction as the changes (primary key):
a replay finds it and changes nothing. A delivery is applied to every project whose
``github_repo`` matches the repository; when the payload names a GitHub App installation,
only projects configured with that installation match (a tenant cannot pull another
organization's repository into its project by naming it).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import GitHubDelivery, Project, ProjectIssue, ProjectPullRequest, utcnow
from models.db import transaction
from orchestration import project_work, webhooks
from orchestration.errors import AuthenticationRequired, MalformedPayload

log = logging.getLogger("baton.github")

HANDLED_EVENTS = ("issues", "issue_comment", "pull_request", "pull_request_review", "push")


@dataclass
class Receipt:
    status: str  # processed | duplicate | ignored
    event: str
    delivery_id: str
    projects: int = 0
    reason: str | None = None


def signature_valid(secret: str, body: bytes, header: str | None) -> bool:
    if not secret or not header or not header.startswith("sha256="):
        return False
    expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(expected.encode(), header.strip().encode())


def receive(
    sessions: sessionmaker[Session],
    *,
    body: bytes,
    signature: str | None,
    event: str | None,
    delivery_id: str | None,
) -> Receipt:
    secret = get_settings().github_webhook_secret
    if not signature_valid(secret, body, signature):
        raise AuthenticationRequired(
            "invalid or missing X-Hub-Signature-256"
            if secret
            else "GitHub webhooks are not configured (GITHUB_WEBHOOK_SECRET)"
        )
    if not event or not delivery_id or len(delivery_id) > 100:
        raise MalformedPayload("X-GitHub-Event and X-GitHub-Delivery headers are required")
    try:
        payload = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise MalformedPayload("the body is not JSON") from None
    if not isinstance(payload, dict):
        raise MalformedPayload("the body is not a JSON object")
    if event == "ping":
        return Receipt("processed", event, delivery_id, reason="pong")
    if event not in HANDLED_EVENTS:
        log.info("GitHub delivery %s: event %s is not handled", delivery_id, event)
        return Receipt("ignored", event, delivery_id, reason=f"event '{event}' is not handled")
    repo = _dig(payload, "repository", "full_name", kind=str)
    installation = (payload.get("installation") or {}).get("id")
    with transaction(sessions) as session:
        if not _first_time(session, delivery_id, event):
            return Receipt("duplicate", event, delivery_id)
        projects = _projects_for(session, repo, installation)
        if not projects:
            log.info("GitHub delivery %s for unknown repository %s ignored", delivery_id, repo)
            return Receipt(
                "ignored", event, delivery_id, reason=f"no project for repository '{repo}'"
            )
        for project in projects:
            HANDLERS[event](session, project, payload)
        session.execute(
            sa.update(GitHubDelivery)
            .where(GitHubDelivery.delivery_id == delivery_id)
            .values(project_id=projects[0].id)
        )
    return Receipt("processed", event, delivery_id, projects=len(projects))


def _first_time(session: Session, delivery_id: str, event: str) -> bool:
    values = {"delivery_id": delivery_id, "event": event, "received_at": utcnow()}
    if session.bind.dialect.name == "postgresql":
        stmt = pg_insert(GitHubDelivery).values(**values).on_conflict_do_nothing()
        return bool(session.execute(stmt).rowcount)
    if session.get(GitHubDelivery, delivery_id) is not None:
        return False
    session.add(GitHubDelivery(**values))
    session.flush()
    return True


def _projects_for(session: Session, repo: str, installation: Any) -> list[Project]:
    stmt = sa.select(Project).where(sa.func.lower(Project.github_repo) == repo.lower())
    if installation is not None:
        stmt = stmt.where(Project.github_installation_id == str(installation))
    return list(session.scalars(stmt.order_by(Project.created_at)))


def _dig(payload: dict[str, Any], *path: str, kind: type) -> Any:
    value: Any = payload
    for key in path:
        if not isinstance(value, dict) or key not in value:
            raise MalformedPayload(f"the payload has no {'.'.join(path)}")
        value = value[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise MalformedPayload(f"{'.'.join(path)} must be a {kind.__name__}")
    return value


def _login(obj: Any) -> str | None:
    return (obj or {}).get("login") if isinstance(obj, dict) else None


# -- mirroring (session in, never commit) -------------------------------------------------


def _issue(session: Session, project: Project, data: dict[str, Any]) -> ProjectIssue:
    number = _dig(data, "number", kind=int)
    row = session.scalar(
        sa.select(ProjectIssue).where(
            ProjectIssue.project_id == project.id, ProjectIssue.number == number
        )
    )
    if row is None:
        row = ProjectIssue(
            organization_id=project.organization_id,
            project_id=project.id,
            number=number,
            comments=[],
        )
        session.add(row)
    row.title = str(data.get("title") or f"#{number}")[:500]
    row.body = data.get("body")
    row.state = "closed" if data.get("state") == "closed" else "open"
    row.labels = [
        label.get("name") for label in data.get("labels") or [] if isinstance(label, dict)
    ]
    row.author = _login(data.get("user"))
    row.html_url = data.get("html_url")
    row.updated_at = utcnow()
    session.flush()
    return row


def _emit(session: Session, project: Project, event_type: str, data: dict[str, Any]) -> None:
    webhooks.record_event(
        session,
        organization_id=project.organization_id,
        event_type=event_type,
        data={"project_id": str(project.id), **data},
    )


def on_issues(session: Session, project: Project, payload: dict[str, Any]) -> None:
    issue = _issue(session, project, _dig(payload, "issue", kind=dict))
    _emit(
        session,
        project,
        "github.issue",
        {"action": payload.get("action"), "issue_id": str(issue.id), "number": issue.number},
    )


def on_issue_comment(session: Session, project: Project, payload: dict[str, Any]) -> None:
    issue = _issue(session, project, _dig(payload, "issue", kind=dict))
    comment = _dig(payload, "comment", kind=dict)
    comment_id = _dig(comment, "id", kind=int)
    entry = {
        "id": comment_id,
        "author": _login(comment.get("user")),
        "body": comment.get("body"),
        "at": comment.get("updated_at") or comment.get("created_at"),
    }
    kept = [c for c in issue.comments or [] if c.get("id") != comment_id]
    issue.comments = kept if payload.get("action") == "deleted" else [*kept, entry]


def _pull_request(session: Session, project: Project, data: dict[str, Any]) -> ProjectPullRequest:
    number = _dig(data, "number", kind=int)
    row = session.scalar(
        sa.select(ProjectPullRequest).where(
            ProjectPullRequest.project_id == project.id, ProjectPullRequest.number == number
        )
    )
    if row is None:
        row = ProjectPullRequest(
            organization_id=project.organization_id, project_id=project.id, number=number
        )
        session.add(row)
    row.title = str(data.get("title") or f"#{number}")[:500]
    row.body = data.get("body")
    row.status = "merged" if data.get("merged") else str(data.get("state") or "open")[:10]
    head, base = data.get("head") or {}, data.get("base") or {}
    row.head_ref, row.head_sha, row.base_ref = head.get("ref"), head.get("sha"), base.get("ref")
    row.author = _login(data.get("user"))
    row.html_url = data.get("html_url")
    row.updated_at = utcnow()
    session.flush()
    return row


def on_pull_request(session: Session, project: Project, payload: dict[str, Any]) -> None:
    pr = _pull_request(session, project, _dig(payload, "pull_request", kind=dict))
    project_work.link_pull_request(session, pr)
    _emit(
        session,
        project,
        "github.pull_request",
        {"action": payload.get("action"), "pull_request_id": str(pr.id), "number": pr.number},
    )


def on_pull_request_review(session: Session, project: Project, payload: dict[str, Any]) -> None:
    pr = _pull_request(session, project, _dig(payload, "pull_request", kind=dict))
    review = _dig(payload, "review", kind=dict)
    pr.review_state = str(review.get("state") or "")[:30].lower() or None


def on_push(session: Session, project: Project, payload: dict[str, Any]) -> None:
    """A branch moved: open pull requests from it now point at the new head."""
    ref = _dig(payload, "ref", kind=str)
    after = payload.get("after")
    branch = ref.removeprefix("refs/heads/")
    session.execute(
        sa.update(ProjectPullRequest)
        .where(
            ProjectPullRequest.project_id == project.id,
            ProjectPullRequest.head_ref == branch,
            ProjectPullRequest.status == "open",
        )
        .values(head_sha=after, updated_at=utcnow())
    )


HANDLERS = {
    "issues": on_issues,
    "issue_comment": on_issue_comment,
    "pull_request": on_pull_request,
    "pull_request_review": on_pull_request_review,
    "push": on_push,
}
