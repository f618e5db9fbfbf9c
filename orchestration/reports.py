"""Spending reports and analytics, all read from the usage ledger (``usage_records``),
scoped to the caller's organization, with every window and bucket in UTC.

Grouping happens in SQL (per UTC day or hour); calendar roll-ups (ISO weeks, months) and
zero-spend buckets are filled in here, so the same code runs on PostgreSQL and SQLite.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import InstrumentedAttribute, Session, sessionmaker

from models import (
    Agent,
    BudgetLimit,
    Conversation,
    ConversationMessage,
    Job,
    JobStatus,
    JobStep,
    Period,
    Project,
    ScopeType,
    UsageRecord,
    utcnow,
)
from models.db import transaction
from orchestration import budget
from orchestration.budget_limits import LimitView
from orchestration.errors import field_error
from orchestration.principal import Principal

GRANULARITIES = ("day", "week", "month")
USAGE_GRANULARITIES = ("hour", "day", "week", "month")
# A 31-day month of hours; two years of days; enough for any chart a person reads.
MAX_BUCKETS = 744
TOP_PROJECTS = 5
AVG_PLACES = Decimal("0.0000000001")


@dataclass
class UsageTotals:
    cost: Decimal = Decimal(0)
    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Summed step time of the calls that have one (avg response time of a bucket).
    response_ms: int = 0
    timed_calls: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def avg_response_ms(self) -> int | None:
        return round(self.response_ms / self.timed_calls) if self.timed_calls else None

    def add(self, other: UsageTotals) -> None:
        self.cost += other.cost
        self.calls += other.calls
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.response_ms += other.response_ms
        self.timed_calls += other.timed_calls


@dataclass(frozen=True)
class DateRange:
    """Whole UTC days, both ends included."""

    start: date
    end: date

    @property
    def start_at(self) -> datetime:
        return datetime(self.start.year, self.start.month, self.start.day, tzinfo=UTC)

    @property
    def end_before(self) -> datetime:
        end = self.end + timedelta(days=1)
        return datetime(end.year, end.month, end.day, tzinfo=UTC)


@dataclass
class PeriodSpend:
    spent: Decimal
    limit: Decimal | None
    start: datetime
    end: datetime | None

    @property
    def percentage(self) -> float | None:
        return float(round(self.spent / self.limit, 4)) if self.limit else None


@dataclass
class BudgetSummary:
    today: PeriodSpend
    week: PeriodSpend
    month: PeriodSpend
    limits: list[LimitView]
    alerts: list[dict[str, Any]]


@dataclass
class ChatTotals:
    """A project's or an agent's conversations (issue 11): how many had a reply in the
    span, the replies written (finished or failed) and what they cost (their ledger rows,
    already inside the usage totals)."""

    conversations: int = 0
    messages: int = 0
    cost: Decimal = Decimal(0)


@dataclass
class SpendRow:
    id: uuid.UUID | None
    name: str | None
    usage: UsageTotals
    type: str | None = None
    chat: ChatTotals = field(default_factory=ChatTotals)


@dataclass
class SpendReport:
    range: DateRange
    items: list[SpendRow]

    @property
    def total(self) -> Decimal:
        return sum((row.usage.cost for row in self.items), Decimal(0))


@dataclass
class Bucket:
    start: datetime  # the calendar period's start (day, Monday, 1st of the month, hour)
    first: datetime  # the part of it inside the asked range
    last: datetime
    usage: UsageTotals = field(default_factory=UsageTotals)


@dataclass
class Timeline:
    range: DateRange
    granularity: str
    buckets: list[Bucket]

    @property
    def total(self) -> Decimal:
        return sum((b.usage.cost for b in self.buckets), Decimal(0))


@dataclass
class AgentMetrics:
    agent: Agent
    usage: UsageTotals
    tasks_completed: int
    tasks_failed: int
    chat: ChatTotals = field(default_factory=ChatTotals)

    @property
    def avg_cost_per_message(self) -> Decimal | None:
        if not self.usage.calls:
            return None
        return (self.usage.cost / self.usage.calls).quantize(AVG_PLACES)

    @property
    def success_rate(self) -> float | None:
        finished = self.tasks_completed + self.tasks_failed
        return round(self.tasks_completed / finished, 4) if finished else None


@dataclass
class RunsSummary:
    total: int
    completed: int
    failed: int
    cancelled: int
    avg_execution_ms: int | None

    @property
    def success_rate(self) -> float | None:
        """Seed 003 gives rates in percent."""
        finished = self.completed + self.failed
        return round(100 * self.completed / finished, 1) if finished else None


@dataclass
class ProjectRuns:
    project_id: uuid.UUID
    name: str
    runs: int
    completed: int
    failed: int

    @property
    def success_rate(self) -> float | None:
        finished = self.completed + self.failed
        return round(100 * self.completed / finished, 1) if finished else None


@dataclass
class UsageAnalytics:
    days: int
    granularity: str
    buckets: list[Bucket]
    runs: RunsSummary
    top_projects: list[ProjectRuns]


# -- SQL pieces ------------------------------------------------------------------------------


def _is_postgres(session: Session) -> bool:
    return session.bind.dialect.name == "postgresql"


def _utc_day(session: Session, column: Any) -> Any:
    if _is_postgres(session):
        return sa.func.date(sa.func.timezone("UTC", column))
    return sa.func.date(column)  # SQLite keeps naive UTC text


def _utc_hour(session: Session, column: Any) -> Any:
    if _is_postgres(session):
        return sa.func.date_trunc("hour", sa.func.timezone("UTC", column))
    return sa.func.strftime("%Y-%m-%d %H:00:00", column)


def _as_datetime(value: Any) -> datetime:
    if isinstance(value, str):
        value = datetime.fromisoformat(value)
    elif not isinstance(value, datetime):  # a date
        value = datetime(value.year, value.month, value.day)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _totals_columns() -> list[Any]:
    return [
        sa.func.coalesce(sa.func.sum(UsageRecord.cost), 0),
        sa.func.count(UsageRecord.id),
        sa.func.coalesce(sa.func.sum(UsageRecord.prompt_tokens), 0),
        sa.func.coalesce(sa.func.sum(UsageRecord.completion_tokens), 0),
    ]


def _totals(row: Iterable[Any]) -> UsageTotals:
    cost, calls, prompt, completion = row
    return UsageTotals(Decimal(cost), int(calls), int(prompt), int(completion))


def _in_window(
    organization_id: uuid.UUID, start: datetime | None, end: datetime | None
) -> list[Any]:
    conditions: list[Any] = [UsageRecord.organization_id == organization_id]
    if start is not None:
        conditions.append(UsageRecord.created_at >= start)
    if end is not None:
        conditions.append(UsageRecord.created_at < end)
    return conditions


def usage_by(
    session: Session,
    *,
    organization_id: uuid.UUID,
    column: InstrumentedAttribute[Any],
    start: datetime | None = None,
    end: datetime | None = None,
    ids: Iterable[uuid.UUID] | None = None,
) -> dict[Any, UsageTotals]:
    """Ledger totals per value of ``column`` (project_id, agent_id, ...) in one query."""
    stmt = sa.select(column, *_totals_columns()).where(*_in_window(organization_id, start, end))
    if ids is not None:
        wanted = list(ids)
        if not wanted:
            return {}
        stmt = stmt.where(column.in_(wanted))
    rows = session.execute(stmt.group_by(column)).all()
    return {row[0]: _totals(row[1:]) for row in rows}


def today_usage(
    session: Session,
    *,
    organization_id: uuid.UUID,
    column: InstrumentedAttribute[Any],
    ids: Iterable[uuid.UUID],
    now: datetime | None = None,
) -> dict[uuid.UUID, UsageTotals]:
    """Today's (UTC) cost, calls and tokens for a page of projects or agents: one query."""
    start, end = budget.window_bounds(Period.DAILY, now)
    return usage_by(
        session, organization_id=organization_id, column=column, start=start, end=end, ids=ids
    )


def _usage_per_unit(
    session: Session, *, organization_id: uuid.UUID, start: datetime, end: datetime, unit: str
) -> list[tuple[datetime, UsageTotals]]:
    """Totals per UTC day or hour, with the calls' step time for response-time averages."""
    key = (_utc_hour if unit == "hour" else _utc_day)(session, UsageRecord.created_at)
    stmt = (
        sa.select(
            key,
            *_totals_columns(),
            sa.func.coalesce(sa.func.sum(JobStep.execution_time_ms), 0),
            sa.func.count(JobStep.execution_time_ms),
        )
        .select_from(UsageRecord)
        .outerjoin(JobStep, JobStep.id == UsageRecord.step_id)
        .where(*_in_window(organization_id, start, end))
        .group_by(key)
    )
    out = []
    for row in session.execute(stmt).all():
        totals = _totals(row[1:5])
        totals.response_ms, totals.timed_calls = int(row[5]), int(row[6])
        out.append((_as_datetime(row[0]), totals))
    return out


# -- calendar buckets --------------------------------------------------------------------------


def _bucket_start(moment: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if granularity == "week":
        return day - timedelta(days=day.weekday())  # ISO week: Monday
    if granularity == "month":
        return day.replace(day=1)
    return day


def _next_start(start: datetime, granularity: str) -> datetime:
    if granularity == "hour":
        return start + timedelta(hours=1)
    if granularity == "week":
        return start + timedelta(days=7)
    if granularity == "month":
        return (start + timedelta(days=32)).replace(day=1)
    return start + timedelta(days=1)


def bucket_count(start: datetime, end_before: datetime, granularity: str) -> int:
    """How many calendar buckets cover [start, end_before), counted without building them."""
    first = _bucket_start(start, granularity)
    last = _bucket_start(end_before - timedelta(microseconds=1), granularity)
    if granularity == "month":
        return (last.year - first.year) * 12 + last.month - first.month + 1
    step = {"hour": 3600, "day": 86400, "week": 7 * 86400}[granularity]
    return int((last - first).total_seconds()) // step + 1


def _buckets(start: datetime, end_before: datetime, granularity: str) -> Iterator[Bucket]:
    cursor = _bucket_start(start, granularity)
    while cursor < end_before:
        following = _next_start(cursor, granularity)
        yield Bucket(cursor, max(cursor, start), min(following, end_before))
        cursor = following


def _roll_up(
    rows: list[tuple[datetime, UsageTotals]],
    start: datetime,
    end_before: datetime,
    granularity: str,
) -> list[Bucket]:
    """Every bucket of the range, zero-spend ones included, each with its rows' totals."""
    buckets = list(_buckets(start, end_before, granularity))
    by_start = {b.start: b for b in buckets}
    for moment, totals in rows:
        by_start[_bucket_start(moment, granularity)].usage.add(totals)
    return buckets


def _check_buckets(
    start: datetime, end_before: datetime, granularity: str, field_name: str
) -> None:
    count = bucket_count(start, end_before, granularity)
    if count > MAX_BUCKETS:
        raise field_error(
            field_name,
            f"the range spans {count} {granularity} buckets; at most {MAX_BUCKETS} are served "
            "(narrow the dates or use a coarser granularity)",
        )


def date_range(
    start: date | None, end: date | None, *, default_start: Any, today: date | None = None
) -> DateRange:
    """``end`` defaults to today (UTC); ``default_start(end)`` gives the start when absent."""
    today = today or utcnow().date()
    end = end or (today if start is None or start <= today else start)
    start = start or default_start(end)
    if end < start:
        raise field_error("end_date", "must be on or after start_date")
    return DateRange(start, end)


def _month_start(day: date) -> date:
    return day.replace(day=1)


# -- queries ------------------------------------------------------------------------------------


def budget_summary(sessions: sessionmaker[Session], *, principal: Principal) -> BudgetSummary:
    """Today / this ISO week / this month from the ledger, each beside the tightest active
    organization-wide limit of that period, plus every active limit past its threshold."""
    now = utcnow()
    bounds = {
        p: budget.window_bounds(p, now) for p in (Period.DAILY, Period.WEEKLY, Period.MONTHLY)
    }
    earliest = min(start for start, _ in bounds.values())
    spent_since = [
        sa.func.coalesce(
            sa.func.sum(sa.case((UsageRecord.created_at >= start, UsageRecord.cost), else_=0)), 0
        )
        for start, _ in bounds.values()
    ]
    # A transaction: a limit's first look at a new period creates that window.
    with transaction(sessions) as session:
        spent = session.execute(
            sa.select(*spent_since).where(*_in_window(principal.organization_id, earliest, None))
        ).one()
        limits = list(
            session.scalars(
                sa.select(BudgetLimit)
                .where(
                    BudgetLimit.organization_id == principal.organization_id,
                    BudgetLimit.is_active.is_(True),
                    BudgetLimit.deleted_at.is_(None),
                )
                .order_by(BudgetLimit.amount_usd, BudgetLimit.id)
            )
        )
        windows = budget.current_windows(session, limits, now)
        names = budget.scope_names(session, limits)
    org_wide = [
        LimitView(limit, windows[limit.id], names.get(limit.id))
        for limit in limits
        if limit.scope_type in (ScopeType.ORGANIZATION, ScopeType.GLOBAL)
    ]
    periods = []
    for (period, (start, end)), amount in zip(bounds.items(), spent, strict=True):
        tightest = next((v.limit.amount_usd for v in org_wide if v.limit.period == period), None)
        periods.append(PeriodSpend(Decimal(amount), tightest, start, end))
    alerts = []
    for limit in limits:
        window = windows[limit.id]
        if limit.amount_usd <= 0:
            continue
        ratio = window.spent / limit.amount_usd
        if ratio >= limit.alert_threshold:
            level = "critical" if ratio >= 1 else "warning"
            alerts.append(budget.alert_payload(limit, window, names.get(limit.id), level))
    alerts.sort(key=lambda a: (a["level"] != "critical", -a["percentage"]))
    return BudgetSummary(*periods, limits=org_wide, alerts=alerts)


def chat_totals(
    session: Session,
    *,
    organization_id: uuid.UUID,
    dimension: str,
    start: datetime | None,
    end: datetime | None,
) -> dict[uuid.UUID | None, ChatTotals]:
    """Replies per project (the conversation's) or per agent (the one that wrote it)."""
    key = Conversation.project_id if dimension == "project" else ConversationMessage.agent_id
    stmt = (
        sa.select(
            key,
            sa.func.count(sa.distinct(ConversationMessage.conversation_id)),
            sa.func.count(),
            sa.func.coalesce(sa.func.sum(ConversationMessage.cost), 0),
        )
        .join(Conversation, Conversation.id == ConversationMessage.conversation_id)
        .where(
            ConversationMessage.organization_id == organization_id,
            ConversationMessage.role == "assistant",
            ConversationMessage.status.in_(["completed", "failed"]),
        )
        .group_by(key)
    )
    if start is not None:
        stmt = stmt.where(ConversationMessage.created_at >= start)
    if end is not None:
        stmt = stmt.where(ConversationMessage.created_at < end)
    return {
        row_id: ChatTotals(conversations, messages, Decimal(cost))
        for row_id, conversations, messages, cost in session.execute(stmt)
    }


def spend_by(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    dimension: str,
    start: date | None = None,
    end: date | None = None,
) -> SpendReport:
    """Spend per project or per agent over whole UTC days (default: this month to date).
    Calls with no project (or agent) are one row with a null id, so rows add up."""
    span = date_range(start, end, default_start=_month_start)
    model = Project if dimension == "project" else Agent
    column = UsageRecord.project_id if dimension == "project" else UsageRecord.agent_id
    with sessions() as session:
        totals = usage_by(
            session,
            organization_id=principal.organization_id,
            column=column,
            start=span.start_at,
            end=span.end_before,
        )
        chats = chat_totals(
            session,
            organization_id=principal.organization_id,
            dimension=dimension,
            start=span.start_at,
            end=span.end_before,
        )
        known = [i for i in totals if i is not None]
        rows = {
            r.id: r
            for r in (session.scalars(sa.select(model).where(model.id.in_(known))) if known else [])
        }
    items = [
        SpendRow(
            id=row_id,
            name=rows[row_id].name if row_id in rows else None,
            type=getattr(rows.get(row_id), "type", None) if dimension == "agent" else None,
            usage=usage,
            chat=chats.get(row_id, ChatTotals()),
        )
        for row_id, usage in totals.items()
    ]
    items.sort(key=lambda r: (-r.usage.cost, r.name is None, r.name or ""))
    return SpendReport(span, items)


def timeline(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    start: date | None = None,
    end: date | None = None,
    granularity: str = "day",
) -> Timeline:
    """Spend per UTC day, ISO week or month over [start_date, end_date], zero buckets
    included; the first and last buckets cover only the part inside the range."""
    span = date_range(start, end, default_start=lambda e: e - timedelta(days=29))
    _check_buckets(span.start_at, span.end_before, granularity, "end_date")
    with sessions() as session:
        rows = _usage_per_unit(
            session,
            organization_id=principal.organization_id,
            start=span.start_at,
            end=span.end_before,
            unit="day",
        )
    return Timeline(span, granularity, _roll_up(rows, span.start_at, span.end_before, granularity))


def agent_analytics(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    start: date | None = None,
    end: date | None = None,
) -> list[AgentMetrics]:
    """Per agent of the organization: provider calls ("messages"), cost, average cost per
    call from the ledger; jobs completed and success rate (completed / finished) from
    jobs. All time unless dates are given."""
    span = None
    if start or end:
        span = date_range(start, end, default_start=lambda e: date(1970, 1, 1))
    window = (span.start_at, span.end_before) if span else (None, None)
    with sessions() as session:
        agents = list(
            session.scalars(
                sa.select(Agent)
                .where(Agent.organization_id == principal.organization_id)
                .order_by(Agent.name, Agent.id)
            )
        )
        usage = usage_by(
            session,
            organization_id=principal.organization_id,
            column=UsageRecord.agent_id,
            start=window[0],
            end=window[1],
        )
        chats = chat_totals(
            session,
            organization_id=principal.organization_id,
            dimension="agent",
            start=window[0],
            end=window[1],
        )
        jobs = sa.select(Job.agent_id, Job.status, sa.func.count()).where(
            Job.organization_id == principal.organization_id,
            Job.agent_id.is_not(None),
            Job.status.in_([JobStatus.COMPLETED.value, JobStatus.FAILED.value]),
        )
        if span:
            jobs = jobs.where(Job.finished_at >= window[0], Job.finished_at < window[1])
        finished: dict[tuple[uuid.UUID, str], int] = {
            (agent_id, status): count
            for agent_id, status, count in session.execute(
                jobs.group_by(Job.agent_id, Job.status)
            ).all()
        }
    return [
        AgentMetrics(
            agent=agent,
            usage=usage.get(agent.id, UsageTotals()),
            tasks_completed=finished.get((agent.id, JobStatus.COMPLETED.value), 0),
            tasks_failed=finished.get((agent.id, JobStatus.FAILED.value), 0),
            chat=chats.get(agent.id, ChatTotals()),
        )
        for agent in agents
    ]


def _elapsed_ms(session: Session) -> Any:
    if _is_postgres(session):
        return sa.func.extract("epoch", Job.finished_at - Job.started_at) * 1000
    return (sa.func.julianday(Job.finished_at) - sa.func.julianday(Job.started_at)) * 86_400_000


def _count_of(status: JobStatus) -> Any:
    return sa.func.count().filter(Job.status == status.value)


def usage_analytics(
    sessions: sessionmaker[Session], *, principal: Principal, days: int, granularity: str
) -> UsageAnalytics:
    """Seed 003's usage analytics over the last ``days`` UTC days (today included):
    provider calls ("requests"), tokens and cost per bucket, jobs of every kind as runs."""
    now = utcnow()
    today = now.date()
    span = DateRange(today - timedelta(days=days - 1), today)
    _check_buckets(span.start_at, span.end_before, granularity, "days")
    org = principal.organization_id
    in_span = [
        Job.organization_id == org,
        Job.created_at >= span.start_at,
        Job.created_at < span.end_before,
    ]
    with sessions() as session:
        rows = _usage_per_unit(
            session,
            organization_id=org,
            start=span.start_at,
            end=span.end_before,
            unit="hour" if granularity == "hour" else "day",
        )
        counts = dict(
            session.execute(
                sa.select(Job.status, sa.func.count()).where(*in_span).group_by(Job.status)
            ).all()
        )
        avg_ms = session.scalar(
            sa.select(sa.func.avg(_elapsed_ms(session))).where(
                *in_span,
                Job.status == JobStatus.COMPLETED.value,
                Job.started_at.is_not(None),
                Job.finished_at.is_not(None),
            )
        )
        per_project = session.execute(
            sa.select(
                Job.project_id,
                Project.name,
                sa.func.count(),
                _count_of(JobStatus.COMPLETED),
                _count_of(JobStatus.FAILED),
            )
            .join(Project, Project.id == Job.project_id)
            .where(*in_span)
            .group_by(Job.project_id, Project.name)
            .order_by(sa.func.count().desc(), Project.name)
            .limit(TOP_PROJECTS)
        ).all()
    runs = RunsSummary(
        total=sum(counts.values()),
        completed=counts.get(JobStatus.COMPLETED.value, 0),
        failed=counts.get(JobStatus.FAILED.value, 0),
        cancelled=counts.get(JobStatus.CANCELLED.value, 0),
        avg_execution_ms=round(float(avg_ms)) if avg_ms is not None else None,
    )
    return UsageAnalytics(
        days=days,
        granularity=granularity,
        buckets=_roll_up(rows, span.start_at, span.end_before, granularity),
        runs=runs,
        top_projects=[ProjectRuns(*row) for row in per_project],
    )
