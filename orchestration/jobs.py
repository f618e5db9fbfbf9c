"""Use-case commands and queries for jobs of every kind.

Commands own one transaction and enqueue only after it commits; queries read Postgres
(never Celery's result store). Lower helpers take a session and never commit.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import dataclass, field
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from models import (
    ACTIVE_STATUSES,
    Agent,
    Job,
    JobEvent,
    JobKind,
    JobPhase,
    JobStatus,
    JobStep,
    Organization,
    Priority,
    Project,
    Template,
    User,
    utcnow,
)
from models.db import autocommit_engine, execute_autocommit, transaction
from orchestration import budget, canvas, model_routing
from orchestration.errors import (
    BudgetExceeded,
    Conflict,
    DomainError,
    Forbidden,
    NotFound,
    field_error,
)
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.ownership import get_owned
from orchestration.plans import PhasePlan, plan_for
from orchestration.principal import Principal
from orchestration.state import cancel_open_steps, transition_job

log = logging.getLogger(__name__)


class ServiceUnavailable(DomainError):
    code, status = "SERVICE_UNAVAILABLE", 503


@dataclass
class JobSubmission:
    kind: JobKind
    title: str
    input: dict[str, Any]
    settings: dict[str, Any] = field(default_factory=dict)
    priority: str = Priority.MEDIUM.value
    project_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    template_id: uuid.UUID | None = None
    custom_phases: list[str] | None = None
    idempotency_key: str | None = None


@dataclass
class JobDetail:
    job: Job
    phases: list[JobPhase]
    steps: list[JobStep]
    events: list[JobEvent]
    created_by: User | None = None
    project: Project | None = None
    # With a HistoryPage: the ``after`` of the next page, None when this one is the last.
    history_next: int | None = None


@dataclass(frozen=True)
class HistoryPage:
    """A page of a job's events: those numbered after ``after``, at most ``limit``."""

    after: int = 0
    limit: int = 100


# -- helpers (session in, never commit) -------------------------------------------------


def _template_phases(
    session: Session, template_id: uuid.UUID, principal: Principal
) -> tuple[Template, list[str]]:
    template = session.get(Template, template_id)
    visible = template is not None and (
        template.organization_id in (None, principal.organization_id) or template.is_public
    )
    if not visible:
        raise NotFound(
            f"template {template_id} not found", [{"field": "template_id", "message": "not found"}]
        )
    phases = (template.template_data or {}).get("phases") or []
    if not phases:
        raise field_error("template_id", "the template defines no phases")
    return template, [str(p) for p in phases]


_Mapped = TypeVar("_Mapped")


def _transient(cls: type[_Mapped], **values: Any) -> _Mapped:
    """A new transient instance of a mapped class holding ``values``, as ``cls(**values)``
    builds it, without the constructor's per-attribute instrumentation events (about
    25 us an object, a dozen objects a job): for the rows ``_insert_new_rows`` writes with
    its own statement, never through a session's unit of work. Attributes read back as
    set (and a session that added it would insert what its ``__dict__`` holds); a name
    that is not a column is refused, as the constructor would."""
    keys, _ = _table_columns(cls.__table__)  # type: ignore[attr-defined]
    if not keys.issuperset(values):
        raise TypeError(f"{cls.__name__} has no column {sorted(set(values) - keys)}")
    row = _class_manager(cls).new_instance()
    row.__dict__.update(values)
    return row


@functools.cache
def _class_manager(cls: type) -> Any:
    return sa.inspect(cls).class_manager


def _plan_rows(job: Job, plans: list[PhasePlan]) -> tuple[list[JobPhase], list[JobStep]]:
    phases: list[JobPhase] = []
    steps: list[JobStep] = []
    for position, plan in enumerate(plans):
        phase = _transient(
            JobPhase, id=uuid.uuid4(), job_id=job.id, position=position, code=f"Phase {position}",
            name=plan.title, status="pending", prompt_tokens=0, completion_tokens=0, cost=0,
        )  # fmt: skip
        phases.append(phase)
        for step_position, step in enumerate(plan.steps):
            steps.append(
                _transient(
                    JobStep, id=uuid.uuid4(), job_id=job.id, phase_id=phase.id, position=step_position,
                    name=step.name, spec=step.spec, celery_task_id=str(uuid.uuid4()), status="pending",
                    attempts=0, prompt_tokens=0, completion_tokens=0, cost=0,
                )
            )  # fmt: skip
    return phases, steps


def _existing_for_key(session: Session, principal: Principal, key: str) -> Job | None:
    return session.scalar(
        sa.select(Job).where(
            Job.organization_id == principal.organization_id, Job.idempotency_key == key
        )
    )


# -- commands -----------------------------------------------------------------------------


def submit_job(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    submission: JobSubmission,
    with_creator: bool = True,
) -> JobDetail:
    """One transaction (job, phases, steps, first event), then one send. Without
    ``with_creator`` the detail's ``created_by`` is None (no read of the user's row): for a
    response that names the creator by ``job.created_by_id`` or not at all."""
    if submission.idempotency_key:
        with transaction(sessions) as session:
            existing = _existing_for_key(session, principal, submission.idempotency_key)
            if existing is not None:
                return _detail(session, existing)
    try:
        # Reads (begun only if the submission needs one: its project, agent, template),
        # closed after. The INSERT is the only write unless the job counts a template use:
        # then both commit together here. Alone, it is one statement in autocommit after
        # the reads: the same rows, no BEGIN and COMMIT (and no empty transaction of the
        # session's to set up and commit when nothing was read).
        with sessions() as session:
            new = _new_job(session, principal=principal, submission=submission)
            creator = session.get(User, principal.user_id) if with_creator else None
            engine = None if new.template_used else autocommit_engine(sessions)
            if engine is None:
                _insert_new_rows(session, new.tables)
                session.commit()
        if engine is not None:
            _insert_autocommit(engine, new.tables)
        job, phases, steps = new.job, new.phases, new.steps
    except IntegrityError:
        # Two submissions with one Idempotency-Key raced: the first one wins, return it.
        if not submission.idempotency_key:
            raise
        with transaction(sessions) as session:
            existing = _existing_for_key(session, principal, submission.idempotency_key)
            if existing is None:
                raise
            return _detail(session, existing)
    try:
        canvas.enqueue(job, phases, steps)
    except Exception as exc:
        log.exception("could not enqueue job %s", job.id)
        with transaction(sessions) as session:
            transition_job(
                session,
                job_id=job.id,
                to=JobStatus.FAILED,
                error="the job queue is unavailable",
                event_data={"error": "broker unavailable"},
                # The client was told 503 (not started): retrying with the same key
                # submits anew instead of finding this job.
                idempotency_key=None,
            )
        raise ServiceUnavailable("The job queue is unavailable; the job was not started") from exc
    return JobDetail(job=job, phases=phases, steps=steps, events=[], created_by=creator)


def create_job_rows(
    session: Session, *, principal: Principal, submission: JobSubmission
) -> tuple[Job, list[JobPhase], list[JobStep]]:
    """For a command that writes a job with rows of its own (one transaction); the caller
    sends it with ``canvas.enqueue`` after the commit."""
    return _create_job(session, principal=principal, submission=submission)


def _create_job(
    session: Session, *, principal: Principal, submission: JobSubmission
) -> tuple[Job, list[JobPhase], list[JobStep]]:
    new = _new_job(session, principal=principal, submission=submission)
    _insert_new_rows(session, new.tables)
    return new.job, new.phases, new.steps


@dataclass
class _NewJob:
    """A checked submission's rows, not yet written (``_insert_new_rows``)."""

    job: Job
    phases: list[JobPhase]
    steps: list[JobStep]
    # Parents first: the job, its phases, its steps, its first event.
    tables: list[list[Any]]
    # The session holds a write of its own (a template's usage count) that must commit
    # with the rows.
    template_used: bool


def _new_job(session: Session, *, principal: Principal, submission: JobSubmission) -> _NewJob:
    """Check a submission (ownership, plan, models, a spent block limit) and build its
    rows; reads through ``session``, writes nothing but a template's usage count."""
    org_id = principal.organization_id
    project = agent = None
    if submission.project_id:
        project = get_owned(
            session, Project, submission.project_id, organization_id=org_id, field="project_id"
        )
    if submission.agent_id:
        agent = get_owned(
            session, Agent, submission.agent_id, organization_id=org_id, field="agent_id"
        )
    # The organization's row only matters when the job does not name its model (its
    # ``default_ai_model`` is the last choice before the deployment's).
    org = (
        None
        if model_routing.names_model(submission.settings)
        else session.get(Organization, principal.organization_id)
    )
    phase_names = submission.custom_phases
    template = None
    if not phase_names and submission.template_id:
        template, phase_names = _template_phases(session, submission.template_id, principal)
        template.usage_count = (template.usage_count or 0) + 1
    plans = plan_for(submission.kind, submission.input, phase_names)
    model_routing.validate_models(
        session, plans, submission.settings, agent, org, principal.organization_id
    )
    # A job that names only its agent belongs to the agent's project: that project's
    # budget limits apply to it and its ledger rows count there (issue 8). Naming another
    # project would dodge the agent's project's limits: refused.
    if project and agent and agent.project_id and agent.project_id != project.id:
        raise field_error("agent_id", "the agent belongs to another project")
    project_id = project.id if project else (agent.project_id if agent else None)
    scope = budget.CallScope(
        principal.organization_id, project_id, agent.id if agent else None, principal.user_id
    )
    # The token check already read whether the organization has any block limit: without
    # one there is nothing to read here (a limit created since is enforced by the worker
    # before any provider call, as one created after this read always was).
    may_block = principal.block_limits is not False
    if may_block and (spent := budget.blocking_limit_spent(session, scope)):
        raise BudgetExceeded(
            f"Budget limit '{spent.name}' ({spent.amount_usd} USD {spent.period}) is already spent",
            [{"limit_id": str(spent.id), "scope_type": spent.scope_type, "period": spent.period}],
        )
    now = utcnow()
    job = _transient(
        Job,
        id=uuid.uuid4(),
        organization_id=principal.organization_id,
        created_by_id=principal.user_id,
        project_id=project_id,
        agent_id=agent.id if agent else None,
        template_id=template.id if template else None,
        kind=submission.kind.value,
        status=JobStatus.QUEUED.value,
        priority=submission.priority,
        title=submission.title,
        input=submission.input,
        settings=submission.settings,
        idempotency_key=submission.idempotency_key,
        queue=canvas.queue_for(submission.priority),
        created_at=now,
        updated_at=now,
    )
    phases, steps = _plan_rows(job, plans)
    job.total_steps = len(steps)
    job.event_seq = 1  # the first event is written with the job, numbered by hand
    first_event = _transient(
        JobEvent,
        job_id=job.id,
        seq=1,
        type="job.queued",
        created_at=now,
        data={
            "status": JobStatus.QUEUED.value,
            "phases": [p.name for p in phases],
            "total_steps": len(steps),
        },
    )
    return _NewJob(job, phases, steps, [[job], phases, steps, [first_event]], template is not None)


def _insert_new_rows(session: Session, tables: list[list[Any]]) -> None:
    """INSERT new rows of several tables, parents first, without the unit of work (its
    bookkeeping cost more than the statements).

    On PostgreSQL it is ONE statement whatever the row counts: each table's rows travel
    as one JSON array expanded by ``jsonb_populate_recordset``, each table but the last in
    a data-modifying CTE (foreign keys are checked at the statement's end); its text
    depends only on the tables and columns, so it is built once. Elsewhere (SQLite) one
    executemany per table. The objects stay transient; a column left unset takes its
    Python default here (set on the object too), so each table's rows set the same columns.
    """
    batches = _batches(tables)
    if session.get_bind().dialect.name != "postgresql":
        for table, values in batches:
            session.execute(table.insert(), values)
        return
    shape, params = _insert_shape_and_params(batches)
    session.execute(_insert_statement(shape), params)


def _insert_autocommit(engine: sa.Engine, tables: list[list[Any]]) -> None:
    """``_insert_new_rows``'s one PostgreSQL statement as a transaction of its own
    (``models.db.execute_autocommit``): for a command whose only write it is."""
    shape, params = _insert_shape_and_params(_batches(tables))
    execute_autocommit(engine, _insert_sql(shape, engine.dialect), params)


def _batches(tables: list[list[Any]]) -> list[tuple[sa.Table, list[dict[str, Any]]]]:
    batches = []
    for rows in filter(None, tables):
        table = type(rows[0]).__table__
        batches.append((table, [_column_values(row, table) for row in rows]))
    return batches


def _insert_shape_and_params(
    batches: list[tuple[sa.Table, list[dict[str, Any]]]],
) -> tuple[tuple[tuple[str, tuple[str, ...]], ...], dict[str, str]]:
    shape = tuple((table.name, tuple(sorted(values[0]))) for table, values in batches)
    params = {f"rows_{i}": json.dumps(values, default=str) for i, (_, values) in enumerate(batches)}
    return shape, params


@functools.lru_cache(maxsize=32)
def _insert_sql(shape: tuple[tuple[str, tuple[str, ...]], ...], dialect: sa.Dialect) -> str:
    """``_insert_statement`` compiled for the driver (its parameter style), once."""
    return str(_insert_statement(shape).compile(dialect=dialect))


@functools.lru_cache(maxsize=32)
def _insert_statement(shape: tuple[tuple[str, tuple[str, ...]], ...]) -> sa.TextClause:
    parts = []
    for i, (table, columns) in enumerate(shape):
        names = ", ".join(columns)
        parts.append(
            f"INSERT INTO {table} ({names}) SELECT {names} "
            f"FROM jsonb_populate_recordset(NULL::{table}, CAST(:rows_{i} AS jsonb))"
        )
    *parents, last = parts
    ctes = ", ".join(f"new_rows_{i} AS ({part})" for i, part in enumerate(parents))
    return sa.text(f"WITH {ctes} {last}" if ctes else last)


@functools.cache
def _table_columns(table: sa.Table) -> tuple[frozenset[str], tuple[tuple[str, Any], ...]]:
    """The table's column keys, and the (key, default) of each column with a Python
    default (looked up once per table, not per row)."""
    defaults = tuple(
        (column.key, column.default)
        for column in table.c
        if column.default is not None and not column.default.is_sequence
    )
    return frozenset(column.key for column in table.c), defaults


def _column_values(row: Any, table: sa.Table) -> dict[str, Any]:
    keys, defaults = _table_columns(table)
    values = {key: value for key, value in vars(row).items() if key in keys}
    for key, default in defaults:
        if key not in values:
            values[key] = default.arg(None) if default.is_callable else default.arg
            # The caller answers from this object (progress 0, not None): it holds what
            # the row holds.
            setattr(row, key, values[key])
    return values


# -- commands (continued) ------------------------------------------------------------------


def cancel_job(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    job_id: uuid.UUID,
    kind: JobKind | None = None,
) -> Job:
    with transaction(sessions) as session:
        job = _get_job(session, principal, job_id, kind)
        # Seed 004: the creator cancels their own jobs; managers and admins cancel any.
        if job.created_by_id != principal.user_id and not principal.can("job:cancel_any"):
            raise Forbidden("Only the job's creator, a manager or an admin can cancel it")
        if not transition_job(
            session,
            job_id=job.id,
            to=JobStatus.CANCELLED,
            event_data={"by": str(principal.user_id)},
        ):
            session.refresh(job)
            raise Conflict(
                f"The job is {job.status} and cannot be cancelled",
                [{"field": "status", "message": job.status}],
            )
        # Read before the open steps become ``cancelled``: their task servers are told.
        external_steps = list(
            session.scalars(
                sa.select(JobStep.id).where(
                    JobStep.job_id == job.id,
                    JobStep.status == "running",
                    JobStep.external.is_not(None),
                )
            )
        )
        cancel_open_steps(session, job_id=job.id, reason="cancelled")
        task_ids = list(
            session.scalars(
                sa.select(JobStep.celery_task_id).where(
                    JobStep.job_id == job.id, JobStep.status == "cancelled"
                )
            )
        )
        session.refresh(job)
    try:
        canvas.revoke([t for t in task_ids if t])
    except Exception:  # revoke is only a shortcut; the cancelled row is what stops work
        log.warning("revoke failed for job %s", job_id, exc_info=True)
    if external_steps:  # after the commit; the step's own poll cancels too, should this fail
        canvas.cancel_external(job, external_steps)
    return job


def resume_job(sessions: sessionmaker[Session], *, principal: Principal, job_id: uuid.UUID) -> Job:
    """A paused job continues from the step it stopped before."""
    from orchestration.recovery import unfinished_plan

    with transaction(sessions) as session:
        job = _get_job(session, principal, job_id, None)
        if not transition_job(
            session,
            job_id=job.id,
            to=JobStatus.QUEUED,
            paused_reason=None,
            event_data={"resumed_by": str(principal.user_id)},
        ):
            session.refresh(job)
            raise Conflict(
                f"The job is {job.status}; only a paused job can be resumed",
                [{"field": "status", "message": job.status}],
            )
        if job.agent_id:
            session.execute(
                sa.update(Agent).where(Agent.id == job.agent_id, Agent.status == "paused").values(status="active")
                .execution_options(synchronize_session=False)
            )  # fmt: skip
        phases, steps = unfinished_plan(session, job.id)
        session.refresh(job)
    canvas.enqueue(job, phases, steps)
    return job


# -- queries ------------------------------------------------------------------------------


def _get_job(
    session: Session, principal: Principal, job_id: uuid.UUID, kind: JobKind | None
) -> Job:
    what = (kind or "job").replace("_", " ")
    job = get_owned(session, Job, job_id, organization_id=principal.organization_id, what=what)
    if kind and job.kind != kind.value:
        raise NotFound(f"{what} {job_id} not found")
    return job


def _detail(session: Session, job: Job, history: HistoryPage | None = None) -> JobDetail:
    phases = list(
        session.scalars(
            sa.select(JobPhase).where(JobPhase.job_id == job.id).order_by(JobPhase.position)
        )
    )
    steps = list(
        session.scalars(
            sa.select(JobStep).where(JobStep.job_id == job.id).order_by(JobStep.position)
        )
    )
    events_query = sa.select(JobEvent).where(JobEvent.job_id == job.id).order_by(JobEvent.seq)
    if history is not None:
        # One more than asked: whether a next page exists, without a count.
        events_query = events_query.where(JobEvent.seq > history.after).limit(history.limit + 1)
    events = list(session.scalars(events_query))
    history_next = None
    if history is not None and len(events) > history.limit:
        events = events[: history.limit]
        history_next = events[-1].seq
    return JobDetail(
        job=job, phases=phases, steps=steps, events=events,
        created_by=session.get(User, job.created_by_id) if job.created_by_id else None,
        project=session.get(Project, job.project_id) if job.project_id else None,
        history_next=history_next,
    )  # fmt: skip


def get_owned_job(
    session: Session, *, principal: Principal, job_id: uuid.UUID, kind: JobKind | None = None
) -> Job:
    """The caller's job (of ``kind``); another organization's is a 404 like a missing one."""
    return _get_job(session, principal, job_id, kind)


def detail_of(session: Session, job: Job) -> JobDetail:
    """A job with its phases, steps, events, creator and project."""
    return _detail(session, job)


def get_job(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    job_id: uuid.UUID,
    kind: JobKind | None = None,
    history: HistoryPage | None = None,
) -> JobDetail:
    """The job with its phases and steps, and its events: all of them, or with
    ``history`` one page of them."""
    with transaction(sessions) as session:
        return _detail(session, _get_job(session, principal, job_id, kind), history)


SORTABLE = {
    "created_at": Job.created_at,
    "updated_at": Job.updated_at,
    "status": Job.status,
    "kind": Job.kind,
    "progress": Job.progress,
    # urgent > high > medium > low, so "-priority" lists the most urgent first.
    "priority": sa.case({"low": 0, "medium": 1, "high": 2, "urgent": 3}, value=Job.priority),
}


@dataclass
class JobFilters:
    kind: JobKind | None = None
    status: list[str] | None = None
    project_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    priority: list[str] | None = None
    created_by_id: uuid.UUID | None = None


def list_jobs(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: JobFilters,
    page: PageRequest,
    with_creators: bool = False,
    with_phases: bool = False,
) -> Page[Job]:
    """A page of the organization's jobs; ``with_creators`` sets each row's
    ``created_by_name`` (its creator's username), ``with_phases`` its ``phase_rows`` and
    ``project_name`` (seed 003's run list), in the same transaction."""
    stmt = sa.select(Job).where(Job.organization_id == principal.organization_id)
    if filters.kind:
        stmt = stmt.where(Job.kind == filters.kind.value)
    if filters.status:
        stmt = stmt.where(Job.status.in_(filters.status))
    if filters.priority:
        stmt = stmt.where(Job.priority.in_(filters.priority))
    if filters.project_id:
        stmt = stmt.where(Job.project_id == filters.project_id)
    if filters.agent_id:
        stmt = stmt.where(Job.agent_id == filters.agent_id)
    if filters.created_by_id:
        stmt = stmt.where(Job.created_by_id == filters.created_by_id)
    stmt = apply_sort(stmt, page.sort, SORTABLE, Job.created_at.desc())
    with transaction(sessions) as session:
        found = paginate(session, stmt, page)
        if with_creators:
            ids = {job.created_by_id for job in found.items if job.created_by_id}
            names = dict(
                session.execute(sa.select(User.id, User.username).where(User.id.in_(ids))).all()
                if ids
                else []
            )
            for job in found.items:
                # Read by seed 004's history ("created_by": a username); not a column.
                job.created_by_name = names.get(job.created_by_id)
        if with_phases:
            attach_phases(session, found.items)
        return found


def attach_phases(session: Session, rows: list[Job]) -> None:
    """Set each job's ``phase_rows`` (in order) and ``project_name``: two queries a page."""
    ids = [job.id for job in rows]
    by_job: dict[uuid.UUID, list[JobPhase]] = {job_id: [] for job_id in ids}
    if ids:
        phases = session.scalars(
            sa.select(JobPhase)
            .where(JobPhase.job_id.in_(ids))
            .order_by(JobPhase.job_id, JobPhase.position)
        )
        for phase in phases:
            by_job[phase.job_id].append(phase)
    project_ids = {job.project_id for job in rows if job.project_id}
    names = dict(
        session.execute(
            sa.select(Project.id, Project.name).where(Project.id.in_(project_ids))
        ).all()
        if project_ids
        else []
    )
    for job in rows:
        # Read by seed 003's run rows (success rate, time, project); not columns.
        job.phase_rows = by_job[job.id]
        job.project_name = names.get(job.project_id)


def is_active(job: Job) -> bool:
    return JobStatus(job.status) in ACTIVE_STATUSES
