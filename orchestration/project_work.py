"""Seed 001's project workflow: GitHub issues become tasks for the project's agents (each
a real ``task`` job on the engine), a task board, and pull requests approved or rejected
on GitHub through the one client.

A task's status is stored (``pending``, ``in_progress``, ``completed``) and read together
with its job: a task in progress whose job completed is in ``review`` (the agent is done,
a person completes it), whose job failed or was cancelled is ``failed``, and one a
``tester`` agent is working on is ``testing``.
"""

from __future__ import annotations

import logging
import re
import uuid
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, aliased, sessionmaker

from models import (
    ACTIVE_STATUSES,
    Agent,
    Job,
    JobKind,
    JobPhase,
    JobStep,
    Project,
    ProjectIssue,
    ProjectPullRequest,
    ProjectTask,
    utcnow,
)
from models.db import transaction
from orchestration import canvas, jobs, webhooks
from orchestration.errors import AgentBusy, Conflict, NotFound, ValidationFailed, field_error
from orchestration.github_client import AppInstallation, GitHubClient
from orchestration.listing import Page, PageRequest, paginate
from orchestration.principal import Principal
from orchestration.projects import owned_project

log = logging.getLogger("baton.project_work")

TASK_STATUSES = ("pending", "in_progress", "testing", "review", "completed", "failed")
# The roles an issue is split into, in order, with what each is asked to do.
ROLES: dict[str, tuple[str, str, str]] = {
    "architect": (
        "complex_reasoning",
        "Design the approach and break the work down",
        "A written design: components touched, risks, and the steps to implement",
    ),
    "coder": (
        "code_generation",
        "Implement the change",
        "The change is implemented and described, ready for tests",
    ),
    "tester": (
        "code_generation",
        "Write and run the tests for the change",
        "Tests cover the issue's cases and pass",
    ),
    "reviewer": (
        "complex_reasoning",
        "Review the change",
        "A review with findings and a verdict",
    ),
}
CLOSING_REFERENCE = re.compile(r"\b(?:close[sd]?|fix(?:e[sd])?|resolve[sd]?)\s+#(\d+)", re.I)

_TaskJob = aliased(Job)
_TaskAgent = aliased(Agent)
DERIVED_STATUS = sa.case(
    (
        sa.and_(ProjectTask.status == "in_progress", _TaskJob.status == "completed"),
        "review",
    ),
    (
        sa.and_(ProjectTask.status == "in_progress", _TaskJob.status.in_(["failed", "cancelled"])),
        "failed",
    ),
    (sa.and_(ProjectTask.status == "in_progress", _TaskAgent.type == "tester"), "testing"),
    else_=ProjectTask.status,
)


@dataclass
class TaskView:
    task: ProjectTask
    status: str
    progress: int
    agent: Agent | None
    issue: ProjectIssue | None
    pull_request: ProjectPullRequest | None


# -- issues -----------------------------------------------------------------------------


def list_issues(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    state: str = "open",
    label: str | None = None,
    page: PageRequest,
) -> Page[ProjectIssue]:
    with sessions() as session:
        owned_project(session, principal=principal, project_id=project_id)
        stmt = sa.select(ProjectIssue).where(ProjectIssue.project_id == project_id)
        if state != "all":
            stmt = stmt.where(ProjectIssue.state == state)
        rows = list(session.scalars(stmt.order_by(ProjectIssue.number.desc())))
    if label:  # labels are a JSON list; filtered here to stay portable across databases
        rows = [r for r in rows if label in (r.labels or [])]
    return Page(
        items=rows[page.offset : page.offset + page.limit],
        total=len(rows),
        limit=page.limit,
        offset=page.offset,
    )


def _issue(session: Session, project: Project, issue_id: uuid.UUID) -> ProjectIssue:
    issue = session.get(ProjectIssue, issue_id)
    if issue is None or issue.project_id != project.id:
        raise NotFound(f"issue {issue_id} not found")
    return issue


def start_issue(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    issue_id: uuid.UUID,
) -> list[TaskView]:
    """One task per role the project's agents cover (architect, coder, tester, reviewer;
    any agent when none has a role), each started as a job unless its agent is busy."""
    started: list[tuple[Job, list[JobPhase], list[JobStep]]] = []
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        issue = _issue(session, project, issue_id)
        if issue.state != "open":
            raise Conflict(f"issue #{issue.number} is closed")
        if session.scalar(sa.select(ProjectTask.id).where(ProjectTask.issue_id == issue.id)):
            raise Conflict(f"issue #{issue.number} is already started: see its tasks")
        agents = list(
            session.scalars(
                sa.select(Agent)
                .where(Agent.project_id == project.id, Agent.status == "active")
                .order_by(Agent.created_at)
            )
        )
        if not agents:
            raise ValidationFailed(
                "the project has no active agents to work on the issue",
                [{"field": "project_id", "message": "add agents to the project first"}],
            )
        by_role = {role: next((a for a in agents if a.type == role), None) for role in ROLES}
        plan = [(role, agent) for role, agent in by_role.items() if agent is not None]
        if not plan:
            plan = [("architect", agents[0])]
        tasks = []
        for role, agent in plan:
            task_type, what, done = ROLES[role]
            task = ProjectTask(
                organization_id=project.organization_id,
                project_id=project.id,
                issue_id=issue.id,
                assigned_to_agent_id=agent.id,
                created_by_id=principal.user_id,
                title=f"{what}: #{issue.number} {issue.title}"[:500],
                description=f"{what} for GitHub issue #{issue.number}.\n\n{issue.body or ''}",
                priority="medium",
                status="pending",
                definition_of_done=done,
            )
            session.add(task)
            session.flush()
            if not _agent_busy(session, agent.id):
                started.append(_start(session, principal, task, task_type))
            tasks.append(task)
            _task_event(session, task, "project.task.created")
        views = [_view(session, t) for t in tasks]
    _enqueue(started)
    return views


# -- tasks ------------------------------------------------------------------------------


def _agent_busy(session: Session, agent_id: uuid.UUID) -> bool:
    return bool(
        session.scalar(
            sa.select(Job.id)
            .where(Job.agent_id == agent_id, Job.status.in_([s.value for s in ACTIVE_STATUSES]))
            .limit(1)
        )
    )


def _start(
    session: Session, principal: Principal, task: ProjectTask, task_type: str = "general"
) -> tuple[Job, list[JobPhase], list[JobStep]]:
    """The task's agent gets a real ``task`` job; sent after the caller's commit."""
    rows = jobs.create_job_rows(
        session,
        principal=principal,
        submission=jobs.JobSubmission(
            kind=JobKind.TASK,
            title=task.title,
            input={
                "title": task.title,
                "description": "\n\n".join(
                    part
                    for part in (
                        task.description,
                        f"Definition of done: {task.definition_of_done}"
                        if task.definition_of_done
                        else None,
                    )
                    if part
                ),
                "parameters": {"task_type": task_type},
                "project_task_id": str(task.id),
            },
            priority=task.priority,
            project_id=task.project_id,
            agent_id=task.assigned_to_agent_id,
        ),
    )
    task.job_id = rows[0].id
    task.status = "in_progress"
    task.updated_at = utcnow()
    return rows


def _enqueue(started: list[tuple[Job, list[JobPhase], list[JobStep]]]) -> None:
    for job, phases, steps in started:
        try:
            canvas.enqueue(job, phases, steps)
        except Exception:  # the reaper re-sends a queued job nobody picked up
            log.exception("could not enqueue job %s of a project task", job.id)


def _task_event(session: Session, task: ProjectTask, event_type: str) -> None:
    webhooks.record_event(
        session,
        organization_id=task.organization_id,
        event_type=event_type,
        data={
            "task_id": str(task.id),
            "project_id": str(task.project_id),
            "issue_id": str(task.issue_id) if task.issue_id else None,
            "assigned_to_agent_id": (
                str(task.assigned_to_agent_id) if task.assigned_to_agent_id else None
            ),
        },
    )


def _task_query() -> sa.Select[Any]:
    return (
        sa.select(ProjectTask, DERIVED_STATUS.label("derived"), _TaskJob.progress)
        .outerjoin(_TaskJob, _TaskJob.id == ProjectTask.job_id)
        .outerjoin(_TaskAgent, _TaskAgent.id == ProjectTask.assigned_to_agent_id)
    )


def _view(session: Session, task: ProjectTask) -> TaskView:
    session.flush()
    row = session.execute(_task_query().where(ProjectTask.id == task.id)).one()
    return _views(session, [row])[0]


def _views(session: Session, rows: list[Any]) -> list[TaskView]:
    def load(model: Any, ids: set[Any]) -> dict[Any, Any]:
        ids.discard(None)
        if not ids:
            return {}
        return {r.id: r for r in session.scalars(sa.select(model).where(model.id.in_(ids)))}

    tasks = [r[0] for r in rows]
    agents = load(Agent, {t.assigned_to_agent_id for t in tasks})
    issues = load(ProjectIssue, {t.issue_id for t in tasks})
    prs = load(ProjectPullRequest, {t.pull_request_id for t in tasks})
    return [
        TaskView(
            task=task,
            status=derived,
            progress=100 if derived in ("review", "completed") else int(progress or 0),
            agent=agents.get(task.assigned_to_agent_id),
            issue=issues.get(task.issue_id),
            pull_request=prs.get(task.pull_request_id),
        )
        for task, derived, progress in rows
    ]


def _task(session: Session, project: Project, task_id: uuid.UUID) -> ProjectTask:
    task = session.get(ProjectTask, task_id)
    if task is None or task.project_id != project.id:
        raise NotFound(f"task {task_id} not found")
    return task


def _agent(session: Session, principal: Principal, agent_id: uuid.UUID, field: str) -> Agent:
    agent = session.get(Agent, agent_id)
    if agent is None or agent.organization_id != principal.organization_id:
        raise field_error(field, f"agent {agent_id} not found")
    return agent


def list_tasks(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    status: str | None = None,
    assigned_to: uuid.UUID | None = None,
    issue_id: uuid.UUID | None = None,
    page: PageRequest,
) -> Page[TaskView]:
    with sessions() as session:
        owned_project(session, principal=principal, project_id=project_id)
        stmt = _task_query().where(ProjectTask.project_id == project_id)
        if status:
            stmt = stmt.where(status == DERIVED_STATUS)
        if assigned_to:
            stmt = stmt.where(ProjectTask.assigned_to_agent_id == assigned_to)
        if issue_id:
            stmt = stmt.where(ProjectTask.issue_id == issue_id)
        stmt = stmt.order_by(ProjectTask.created_at, ProjectTask.id)
        total = session.scalar(
            sa.select(sa.func.count()).select_from(stmt.order_by(None).subquery())
        )
        rows = list(session.execute(stmt.limit(page.limit).offset(page.offset)))
        items = _views(session, rows)
    return Page(items=items, total=total or 0, limit=page.limit, offset=page.offset)


def get_task(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    task_id: uuid.UUID,
) -> TaskView:
    with sessions() as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        return _view(session, _task(session, project, task_id))


def create_task(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    data: dict[str, Any],
) -> TaskView:
    """A manual task; with ``assigned_to_agent_id`` its agent starts at once (AGENT_BUSY
    when the agent is already working)."""
    started = []
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        if data.get("issue_id"):
            issue = session.get(ProjectIssue, data["issue_id"])
            if issue is None or issue.project_id != project.id:
                raise field_error("issue_id", f"issue {data['issue_id']} not found")
        task = ProjectTask(
            organization_id=project.organization_id,
            project_id=project.id,
            issue_id=data.get("issue_id"),
            created_by_id=principal.user_id,
            title=data["title"],
            description=data.get("description"),
            priority=data.get("priority") or "medium",
            status="pending",
            definition_of_done=data.get("definition_of_done"),
        )
        session.add(task)
        session.flush()
        if agent_id := data.get("assigned_to_agent_id"):
            agent = _agent(session, principal, agent_id, "assigned_to_agent_id")
            if _agent_busy(session, agent.id):
                raise AgentBusy(f"agent '{agent.name}' is already working on a task")
            task.assigned_to_agent_id = agent.id
            started.append(_start(session, principal, task))
        _task_event(session, task, "project.task.created")
        view = _view(session, task)
    _enqueue(started)
    return view


def assign_task(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    task_id: uuid.UUID,
    agent_id: uuid.UUID,
) -> TaskView:
    started = []
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        # Locked: two assigns of one task cannot both start a job.
        task = session.scalar(
            sa.select(ProjectTask)
            .where(ProjectTask.id == task_id, ProjectTask.project_id == project.id)
            .with_for_update()
        )
        if task is None:
            raise NotFound(f"task {task_id} not found")
        agent = _agent(session, principal, agent_id, "agent_id")
        current = _view(session, task).status
        if current == "completed":
            raise Conflict("the task is completed")
        if current in ("in_progress", "testing"):
            raise Conflict("the task is in progress; wait for it or cancel its job")
        if _agent_busy(session, agent.id):
            raise AgentBusy(f"agent '{agent.name}' is already working on a task")
        task.assigned_to_agent_id = agent.id
        started.append(_start(session, principal, task))
        view = _view(session, task)
    _enqueue(started)
    return view


def complete_task(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    task_id: uuid.UUID,
) -> TaskView:
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        task = _task(session, project, task_id)
        current = _view(session, task).status
        if current == "completed":
            return _view(session, task)
        if current in ("in_progress", "testing"):
            raise Conflict("the agent is still working on the task")
        changed = session.execute(
            sa.update(ProjectTask)
            .where(ProjectTask.id == task.id, ProjectTask.status != "completed")
            .values(status="completed", completed_at=utcnow(), updated_at=utcnow())
        ).rowcount
        session.refresh(task)
        if changed:
            _task_event(session, task, "project.task.completed")
        return _view(session, task)


def issue_tasks(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    issue_id: uuid.UUID,
    page: PageRequest,
) -> Page[TaskView]:
    with sessions() as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        _issue(session, project, issue_id)
    return list_tasks(
        sessions, principal=principal, project_id=project_id, issue_id=issue_id, page=page
    )


# -- pull requests ----------------------------------------------------------------------


def list_pull_requests(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    status: str | None,
    page: PageRequest,
) -> Page[ProjectPullRequest]:
    with sessions() as session:
        owned_project(session, principal=principal, project_id=project_id)
        stmt = sa.select(ProjectPullRequest).where(ProjectPullRequest.project_id == project_id)
        if status and status != "all":
            stmt = stmt.where(ProjectPullRequest.status == status)
        return paginate(session, stmt.order_by(ProjectPullRequest.number.desc()), page)


def link_pull_request(session: Session, pr: ProjectPullRequest) -> None:
    """A pull request whose body closes issue #N is the pull request of #N's tasks."""
    numbers = {int(n) for n in CLOSING_REFERENCE.findall(pr.body or "")}
    if not numbers:
        return
    issue_ids = sa.select(ProjectIssue.id).where(
        ProjectIssue.project_id == pr.project_id, ProjectIssue.number.in_(numbers)
    )
    session.execute(
        sa.update(ProjectTask)
        .where(ProjectTask.issue_id.in_(issue_ids), ProjectTask.pull_request_id.is_(None))
        .values(pull_request_id=pr.id, updated_at=utcnow())
    )


def _pr_target(
    sessions: sessionmaker[Session], principal: Principal, project_id: uuid.UUID, pr_id: uuid.UUID
) -> tuple[str, int, AppInstallation]:
    with sessions() as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        pr = session.get(ProjectPullRequest, pr_id)
        if pr is None or pr.project_id != project.id:
            raise NotFound(f"pull request {pr_id} not found")
        if pr.status != "open":
            raise Conflict(f"pull request #{pr.number} is {pr.status}")
        if not (project.github_repo and project.github_app_id and project.github_installation_id):
            raise ValidationFailed(
                "the project has no GitHub App configured",
                [
                    {"field": "github_app_id", "message": "set github_repo, github_app_id and "
                     "github_installation_id on the project"}
                ],
            )  # fmt: skip
        installation = AppInstallation(project.github_app_id, project.github_installation_id)
        return project.github_repo, pr.number, installation


def _update_pr(
    sessions: sessionmaker[Session], pr_id: uuid.UUID, **values: Any
) -> ProjectPullRequest:
    with transaction(sessions) as session:
        session.execute(
            sa.update(ProjectPullRequest)
            .where(ProjectPullRequest.id == pr_id)
            .values(updated_at=utcnow(), **values)
        )
        pr = session.get(ProjectPullRequest, pr_id)
        if pr.status == "merged":
            session.execute(
                sa.update(ProjectTask)
                .where(ProjectTask.pull_request_id == pr.id, ProjectTask.status != "completed")
                .values(status="completed", completed_at=utcnow(), updated_at=utcnow())
            )
        return pr


def approve_pull_request(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    pull_request_id: uuid.UUID,
) -> ProjectPullRequest:
    """An approving review, then a merge (GitHub refuses it while checks fail: then the
    pull request stays open, approved)."""
    repo, number, installation = _pr_target(sessions, principal, project_id, pull_request_id)
    client = GitHubClient(installation)
    client.review(repo, number, "APPROVE")
    merged = client.merge(repo, number)
    values: dict[str, Any] = {"review_state": "approved"}
    if merged:
        values["status"] = "merged"
    return _update_pr(sessions, pull_request_id, **values)


def reject_pull_request(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    pull_request_id: uuid.UUID,
    feedback: str,
) -> ProjectPullRequest:
    repo, number, installation = _pr_target(sessions, principal, project_id, pull_request_id)
    GitHubClient(installation).review(repo, number, "REQUEST_CHANGES", feedback)
    return _update_pr(sessions, pull_request_id, review_state="changes_requested")
