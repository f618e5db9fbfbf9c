"""Projects: what jobs, agents and runs are grouped under. Scoped to the caller's org."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobKind, Project, ProjectIssue, UsageRecord, User, utcnow
from models.db import transaction
from orchestration import conversations, jobs
from orchestration.accounts import users_by_id
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.ownership import get_owned
from orchestration.principal import Principal
from orchestration.reports import UsageTotals, today_usage

STATUSES = ("active", "completed", "archived", "failed")
PRIORITIES = ("low", "medium", "high", "urgent")
RECENT_RUNS = 10

# Sorting by priority means by urgency, not alphabetically.
_PRIORITY_RANK = sa.case({p: i for i, p in enumerate(PRIORITIES)}, value=Project.priority, else_=-1)
SORTS = {
    "name": Project.name,
    "created_at": Project.created_at,
    "updated_at": Project.updated_at,
    "priority": _PRIORITY_RANK,
    "status": Project.status,
}
# API names -> model attributes ("metadata" is reserved on declarative models).
_ATTRIBUTES = {
    "name": "name",
    "description": "description",
    "topic": "topic",
    "status": "status",
    "priority": "priority",
    "metadata": "metadata_",
    "github_repo": "github_repo",
    "github_app_id": "github_app_id",
    "github_installation_id": "github_installation_id",
}


@dataclass
class ProjectFilters:
    status: list[str] | None = None
    priority: list[str] | None = None
    search: str | None = None


@dataclass
class ProjectView:
    project: Project
    created_by: User | None = None
    runs: list[Job] = field(default_factory=list)
    today: UsageTotals = field(default_factory=UsageTotals)  # seed 001 ``stats``
    open_issues: int = 0
    active_conversations: int = 0  # seed 001 ``stats`` (issue 11)


def like_pattern(text: str) -> str:
    """A substring ILIKE pattern with the user's % and _ taken literally (escape '\\')."""
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


# -- helpers (session in, never commit) ---------------------------------------------------


def owned_project(session: Session, *, principal: Principal, project_id: uuid.UUID) -> Project:
    """Another organization's project is indistinguishable from a missing one: 404."""
    return get_owned(
        session, Project, project_id, organization_id=principal.organization_id,
        what="Project", field="project_id",
    )  # fmt: skip


def _apply(project: Project, changes: dict[str, Any]) -> None:
    for name, value in changes.items():
        if name in _ATTRIBUTES:
            setattr(project, _ATTRIBUTES[name], value)


def _today(session: Session, projects: list[Project]) -> dict[uuid.UUID, UsageTotals]:
    """Today's ledger totals for a page of projects, in one grouped query."""
    if not projects:
        return {}
    return today_usage(
        session,
        organization_id=projects[0].organization_id,
        column=UsageRecord.project_id,
        ids=[p.id for p in projects],
    )


def _open_issues(session: Session, projects: list[Project]) -> dict[uuid.UUID, int]:
    """Seed 001 ``stats.open_issues``: GitHub issues mirrored open, per project."""
    if not projects:
        return {}
    rows = session.execute(
        sa.select(ProjectIssue.project_id, sa.func.count())
        .where(ProjectIssue.project_id.in_([p.id for p in projects]), ProjectIssue.state == "open")
        .group_by(ProjectIssue.project_id)
    )
    return {project_id: count for project_id, count in rows}


def _view(session: Session, project: Project, *, with_runs: bool = False) -> ProjectView:
    creators = users_by_id(session, ids=[project.created_by_id])
    runs: list[Job] = []
    if with_runs:
        runs = list(
            session.scalars(
                sa.select(Job)
                .where(
                    Job.organization_id == project.organization_id,
                    Job.project_id == project.id,
                    Job.kind == JobKind.ORCHESTRATION.value,
                )
                .order_by(Job.created_at.desc())
                .limit(RECENT_RUNS)
            )
        )
        jobs.attach_phases(session, runs)  # each run's success rate (seed 003)
    today = _today(session, [project]).get(project.id, UsageTotals())
    open_issues = _open_issues(session, [project]).get(project.id, 0)
    talking = conversations.active_conversations(session, [project.id]).get(project.id, 0)
    return ProjectView(
        project, creators.get(project.created_by_id), runs, today, open_issues, talking
    )  # type: ignore[arg-type]


# -- commands and queries ------------------------------------------------------------------


def create_project(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> ProjectView:
    with transaction(sessions) as session:
        project = Project(
            organization_id=principal.organization_id,
            created_by_id=principal.user_id,
            status="active",
            priority="medium",
            metadata_={},
        )
        _apply(project, data)
        session.add(project)
        session.flush()
        return _view(session, project)


def list_projects(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: ProjectFilters,
    page: PageRequest,
) -> Page[ProjectView]:
    stmt = sa.select(Project).where(Project.organization_id == principal.organization_id)
    if filters.status:
        stmt = stmt.where(Project.status.in_(filters.status))
    if filters.priority:
        stmt = stmt.where(Project.priority.in_(filters.priority))
    if filters.search:
        pattern = like_pattern(filters.search)
        stmt = stmt.where(
            sa.or_(
                Project.name.ilike(pattern, escape="\\"),
                Project.description.ilike(pattern, escape="\\"),
            )
        )
    stmt = apply_sort(stmt, page.sort, SORTS, Project.created_at.desc()).order_by(Project.id)
    with sessions() as session:
        result = paginate(session, stmt, page)
        creators = users_by_id(session, ids=[p.created_by_id for p in result.items])
        today = _today(session, result.items)
        open_issues = _open_issues(session, result.items)
        talking = conversations.active_conversations(session, [p.id for p in result.items])
    items = [
        ProjectView(
            p,
            creators.get(p.created_by_id),
            today=today.get(p.id, UsageTotals()),
            open_issues=open_issues.get(p.id, 0),
            active_conversations=talking.get(p.id, 0),
        )
        for p in result.items
    ]
    return result.with_items(items)


def get_project(
    sessions: sessionmaker[Session], *, principal: Principal, project_id: uuid.UUID
) -> ProjectView:
    with sessions() as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        return _view(session, project, with_runs=True)


def update_project(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    project_id: uuid.UUID,
    changes: dict[str, Any],
) -> ProjectView:
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        _apply(project, changes)
        project.updated_at = utcnow()
        session.flush()
        return _view(session, project, with_runs=True)


def delete_project(
    sessions: sessionmaker[Session], *, principal: Principal, project_id: uuid.UUID
) -> None:
    """Agents and jobs keep existing with project_id NULL (the foreign keys SET NULL)."""
    with transaction(sessions) as session:
        project = owned_project(session, principal=principal, project_id=project_id)
        session.delete(project)
