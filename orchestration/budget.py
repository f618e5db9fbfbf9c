"""Budget accounting: limits over calendar windows, reserve -> call -> settle.

Before a provider call a worker reserves the call's worst-case cost on the current window
of every limit that applies, each with ONE conditional UPDATE
(``reserved = reserved + x WHERE spent + reserved + x <= amount``), so concurrent workers
can never push a ``block`` limit past its amount. After the call it settles the actual
cost (same transaction as the usage row) and releases the rest. Windows are anchored in
UTC (day, ISO week, month, or all time) and a new window starts from the ledger's sum for
its scope, so a limit added to a scope that has already spent counts that spend at once.

Nothing here commits; callers own the transaction.
"""

from __future__ import annotations

import functools
import logging
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any, NoReturn

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from models import (
    Agent,
    BudgetLimit,
    BudgetReservation,
    BudgetWindow,
    Job,
    LimitAction,
    Notification,
    Organization,
    Period,
    Project,
    ScopeType,
    UsageRecord,
    User,
    utcnow,
)
from models.budget import DEFERRED, deferred_sums
from models.prepared import execute_prepared
from orchestration import live, metrics, webhooks
from orchestration.errors import BudgetExceeded
from orchestration.money import money_text

log = logging.getLogger(__name__)

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True)
class CallScope:
    """Who a provider call is charged to."""

    organization_id: uuid.UUID
    project_id: uuid.UUID | None = None
    agent_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    @classmethod
    def of(cls, job: Job) -> CallScope:
        return cls(job.organization_id, job.project_id, job.agent_id, job.created_by_id)


@dataclass(slots=True)
class Hold:
    """One hold ``reserve`` made: the values of its ``budget_reservations`` row (a plain
    record, not a loaded object: building ORM instances was a measurable share of a
    reservation's Python)."""

    id: uuid.UUID
    window_id: uuid.UUID | None
    call_key: str
    job_id: uuid.UUID | None
    amount: Decimal
    status: str
    expires_at: datetime
    created_at: datetime


class BudgetPaused(Exception):
    """A ``pause`` limit is spent: the job pauses before this call."""

    def __init__(self, limit: BudgetLimit) -> None:
        super().__init__(f"budget limit '{limit.name}' reached")
        # Plain values: the limit row is gone with the transaction that refused the hold.
        self.limit_id = str(limit.id)
        self.limit_name = limit.name


def window_bounds(period: str, now: datetime | None = None) -> tuple[datetime, datetime | None]:
    now = (now or utcnow()).astimezone(UTC)
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == Period.DAILY:
        return day, day + timedelta(days=1)
    if period == Period.WEEKLY:
        start = day - timedelta(days=day.weekday())  # ISO week: Monday
        return start, start + timedelta(days=7)
    if period == Period.MONTHLY:
        start = day.replace(day=1)
        end = (start + timedelta(days=32)).replace(day=1)
        return start, end
    return EPOCH, None


def _scope_filter(limit: BudgetLimit) -> list[Any]:
    conditions: list[Any] = [UsageRecord.organization_id == limit.organization_id]
    column = {
        ScopeType.PROJECT: UsageRecord.project_id,
        ScopeType.AGENT: UsageRecord.agent_id,
        ScopeType.USER: UsageRecord.user_id,
    }.get(ScopeType(limit.scope_type))
    if column is not None:
        conditions.append(column == limit.scope_id)
    return conditions


def _ledger_spend_query(limit: BudgetLimit, start: datetime, end: datetime | None) -> sa.Select:
    stmt = sa.select(sa.func.coalesce(sa.func.sum(UsageRecord.cost), 0)).where(
        *_scope_filter(limit), UsageRecord.created_at >= start
    )
    if end is not None:
        stmt = stmt.where(UsageRecord.created_at < end)
    return stmt


def _create_window(
    session: Session, limit: BudgetLimit, start: datetime, end: datetime | None
) -> bool:
    """INSERT the window with ``spent`` summed from the ledger in the same statement, or
    nothing if it exists (ON CONFLICT). True when this transaction created it.

    One statement matters: a call settling concurrently either committed its usage row
    before it (and is in the sum), or finds the window when it settles (its own
    ``_create_window`` waits on this row's unique key until this commits) and adds
    its cost there (``settle``): never counted twice, never missed.
    """
    insert = pg_insert if session.bind.dialect.name == "postgresql" else sqlite_insert
    return bool(
        session.execute(
            insert(_WINDOWS)
            .values(
                id=uuid.uuid4(), limit_id=limit.id, window_start=start, window_end=end,
                spent=_ledger_spend_query(limit, start, end).scalar_subquery(),
                reserved=Decimal(0),
            )
            .on_conflict_do_nothing(index_elements=["limit_id", "window_start"])
        ).rowcount
    )  # fmt: skip


def applicable_limits(session: Session, scope: CallScope) -> list[BudgetLimit]:
    """``global`` and ``organization`` cover all of the organization's spend; a tenant
    can only budget its own spend, so ``global`` is kept for seed 001's vocabulary."""
    return list(
        session.scalars(
            sa.select(BudgetLimit)
            .where(*_applicable(scope))
            .order_by(BudgetLimit.id)  # a fixed order: concurrent reservers lock windows alike
        )
    )


def _applicable(scope: CallScope) -> list[Any]:
    # Equalities, not IN: an IN list is expanded into the statement on every execution.
    matches = [
        BudgetLimit.scope_type == ScopeType.GLOBAL.value,
        BudgetLimit.scope_type == ScopeType.ORGANIZATION.value,
    ]
    for scope_type, scope_id in (
        (ScopeType.PROJECT, scope.project_id),
        (ScopeType.AGENT, scope.agent_id),
        (ScopeType.USER, scope.user_id),
    ):
        if scope_id is not None:
            matches.append(
                sa.and_(
                    BudgetLimit.scope_type == scope_type.value, BudgetLimit.scope_id == scope_id
                )
            )
    return [
        BudgetLimit.organization_id == scope.organization_id,
        BudgetLimit.is_active.is_(True),
        BudgetLimit.deleted_at.is_(None),
        sa.or_(*matches),
    ]


def any_active_limit(organization_id: Any) -> sa.Exists:
    """Whether the organization has an active limit: every limit applicable to one of its
    calls (``_applicable``) is one, so without any a call needs no hold. An expression of
    ``organization_id`` (a column of the caller's statement, or a value)."""
    return sa.exists().where(
        BudgetLimit.organization_id == organization_id,
        BudgetLimit.is_active.is_(True),
        BudgetLimit.deleted_at.is_(None),
    )


def _limits_with_windows(session: Session, scope: CallScope, now: datetime) -> list[Any]:
    """Each applicable limit (in id order) with its window for ``now`` (``window_id``, None
    when that window is not created yet): one query for what ``applicable_limits`` and a
    ``current_window`` per limit would read. Rows of the limit's columns (``LIMIT_ROW``),
    not loaded objects: the hot paths only read them."""
    shape = (scope.project_id is not None, scope.agent_id is not None, scope.user_id is not None)
    return execute_prepared(
        session, _limits_with_windows_query(*shape), _scope_params(scope, now)
    ).all()


def _scope_params(scope: CallScope, now: datetime) -> dict[str, Any]:
    params = dict(_window_starts(now.astimezone(UTC).date()))
    params["scope_organization"] = scope.organization_id
    for name, value in (
        ("scope_project", scope.project_id),
        ("scope_agent", scope.agent_id),
        ("scope_user", scope.user_id),
    ):
        if value is not None:
            params[name] = value
    return params


@functools.lru_cache(maxsize=4)
def _window_starts(day: date) -> dict[str, datetime]:
    """Each period's window start on the UTC ``day`` (it depends on nothing else)."""
    now = datetime(day.year, day.month, day.day, tzinfo=UTC)
    return {f"start_{period.value}": window_bounds(period, now)[0] for period in Period}


# What a hold, a refusal, a window's creation and an unheld charge read of a limit.
LIMIT_ROW = (
    "id",
    "organization_id",
    "name",
    "scope_type",
    "scope_id",
    "amount_usd",
    "period",
    "action_on_exceed",
)


@functools.lru_cache(maxsize=8)
def _limits_with_windows_query(project: bool, agent: bool, user: bool) -> sa.Select:
    """Built once per scope shape with named parameters: building it per call cost more
    Python than the statement's round trip."""
    scope = CallScope(
        sa.bindparam("scope_organization"),  # type: ignore[arg-type]
        sa.bindparam("scope_project") if project else None,  # type: ignore[arg-type]
        sa.bindparam("scope_agent") if agent else None,  # type: ignore[arg-type]
        sa.bindparam("scope_user") if user else None,  # type: ignore[arg-type]
    )
    limits = BudgetLimit.__table__
    start_type = _WINDOWS.c.window_start.type
    window_start = sa.case(
        {p.value: sa.bindparam(f"start_{p.value}", type_=start_type) for p in Period},
        value=limits.c.period,
    )
    return (
        sa.select(*(limits.c[name] for name in LIMIT_ROW), _WINDOWS.c.id.label("window_id"))
        .select_from(limits)
        .outerjoin(
            _WINDOWS,
            sa.and_(_WINDOWS.c.limit_id == limits.c.id, _WINDOWS.c.window_start == window_start),
        )
        .where(*_applicable(scope))
        .order_by(limits.c.id)  # a fixed order: concurrent reservers lock windows alike
    )


def current_window(
    session: Session, limit: BudgetLimit, now: datetime | None = None
) -> BudgetWindow:
    """The limit's window for ``now``, created on first use from the ledger's sum."""
    start, end = window_bounds(limit.period, now)
    window = session.scalar(
        sa.select(BudgetWindow).where(
            BudgetWindow.limit_id == limit.id, BudgetWindow.window_start == start
        )
    )
    if window is not None:
        return window
    _create_window(session, limit, start, end)
    return session.scalar(
        sa.select(BudgetWindow)
        .where(BudgetWindow.limit_id == limit.id, BudgetWindow.window_start == start)
        .execution_options(populate_existing=True)
    )


def current_windows(
    session: Session, limits: list[BudgetLimit], now: datetime | None = None
) -> dict[uuid.UUID, BudgetWindow]:
    """Each limit's current window: one query for those that exist, then the missing ones
    are created from the ledger (a page of limits costs one query, not one per limit)."""
    if not limits:
        return {}
    now = now or utcnow()
    starts = {limit.id: window_bounds(limit.period, now)[0] for limit in limits}
    found = {
        w.limit_id: w
        for w in session.scalars(
            sa.select(BudgetWindow)
            .where(
                BudgetWindow.limit_id.in_(list(starts)),
                BudgetWindow.window_start.in_(set(starts.values())),
            )
            .execution_options(populate_existing=True)
        )
        if w.window_start == starts[w.limit_id]
    }
    for limit in limits:
        if limit.id not in found:
            found[limit.id] = current_window(session, limit, now)
    return found


def resync_window(session: Session, limit: BudgetLimit, now: datetime | None = None) -> None:
    """Set the current window's ``spent`` back to the ledger's sum for it.

    For a limit switched back on: while inactive, no call charged its window. Holds still
    in flight keep their ``reserved`` and add their cost at settle, in the same commit as
    their usage row, so the ledger sum read here does not count them twice.

    The window row is locked first, and the ledger read after: no reservation is folding
    deferred settlements into it meanwhile, and a deferred settlement's usage row is in
    that sum exactly when its hold is still ``deferred`` for this statement, so the
    column is set to the sum less what is deferred (the fold adds those later).
    """
    window = current_window(session, limit, now)
    session.execute(sa.select(_WINDOWS.c.id).where(_WINDOWS.c.id == window.id).with_for_update())
    deferred_spent, _ = deferred_sums(window.id)
    session.execute(
        sa.update(_WINDOWS)
        .where(_WINDOWS.c.id == window.id)
        .values(
            spent=_ledger_spend_query(
                limit, window.window_start, window.window_end
            ).scalar_subquery()
            - deferred_spent
        )
    )
    session.refresh(window)


def rearm_alerts(session: Session, limit: BudgetLimit, window: BudgetWindow) -> None:
    """After a limit's amount or threshold changed: a level the window is now below may
    alert again when spend crosses it (once per window still holds for each crossing)."""
    if limit.amount_usd <= 0:
        return
    ratio = window.spent / limit.amount_usd
    values: dict[str, Any] = {}
    if window.threshold_alerted_at is not None and ratio < limit.alert_threshold:
        values["threshold_alerted_at"] = None
    if window.exceeded_alerted_at is not None and ratio < 1:
        values["exceeded_alerted_at"] = None
    if values:
        session.execute(
            sa.update(BudgetWindow)
            .where(BudgetWindow.id == window.id)
            .values(values)
            .execution_options(synchronize_session=False)
        )
        session.refresh(window)


def reserve(
    session: Session,
    *,
    scope: CallScope,
    call_key: str,
    amount: Decimal,
    job_id: uuid.UUID | None,
    hold_seconds: int,
    any_limit: bool = True,
) -> list[Hold]:
    """Hold ``amount`` on every applicable limit's window, or raise.

    ``block`` raises BudgetExceeded and ``pause`` raises BudgetPaused when the hold does not
    fit; the caller's transaction rolls back every hold made before the refusal.
    ``any_limit=False``: the caller has read that the organization has no active limit
    (``any_active_limit``) in this transaction, so there is nothing to hold on and no
    statement to send; the call counts as held, as one the limits let through.

    On PostgreSQL one statement reads the applicable limits with their current windows
    and holds on the first (in id order; for one limit, the whole reservation); further
    limits, and a window not created yet, take a statement each, in the same id order.
    """
    if not any_limit:
        metrics.count_on_commit(session, metrics.BUDGET_HOLDS, outcome="held")
        return []
    now = utcnow()
    values = {
        "call_key": call_key,
        "job_id": job_id,
        "amount": amount,
        "status": "held",
        "expires_at": now + timedelta(seconds=hold_seconds),
        "created_at": now,
    }
    session.flush()  # pending rows before the window lock (these statements are Core)
    one = _one_statement(session)
    if one:
        # Built before the statement: the window stays locked from it to the commit.
        first = Hold(id=uuid.uuid4(), window_id=None, **values)
        params = _scope_params(scope, now)
        params.update((f"hold_{name}", value) for name, value in values.items())
        params["hold_id"] = first.id
        shape = (
            scope.project_id is not None,
            scope.agent_id is not None,
            scope.user_id is not None,
        )
        rows = execute_prepared(session, _reserve_statement(*shape), params).all()
    else:
        rows = _limits_with_windows(session, scope, now)
    holds: list[Hold] = []
    for position, limit in enumerate(rows):
        if one and position == 0 and limit.window_id is not None:
            # The statement above tried this window: held, or it does not fit.
            first.window_id = limit.window_id
            ceiling = None if limit.action_on_exceed == LimitAction.WARN else limit.amount_usd
            if limit.held_window is None and not _hold_exactly(session, first, ceiling):
                _refuse(limit)
            holds.append(first)
            continue
        hold = Hold(
            id=uuid.uuid4(),
            window_id=limit.window_id or current_window(session, limit, now).id,
            **values,
        )
        ceiling = None if limit.action_on_exceed == LimitAction.WARN else limit.amount_usd
        if not _hold(session, hold, ceiling):
            _refuse(limit)
        holds.append(hold)
    metrics.count_on_commit(session, metrics.BUDGET_HOLDS, outcome="held")
    return holds


def _refuse(limit: Any) -> NoReturn:
    metrics.budget_refused(paused=limit.action_on_exceed == LimitAction.PAUSE)
    if limit.action_on_exceed == LimitAction.PAUSE:
        raise BudgetPaused(limit)
    raise BudgetExceeded(
        f"Budget limit '{limit.name}' ({limit.amount_usd} USD {limit.period}) would be exceeded",
        [{"limit_id": str(limit.id), "scope_type": limit.scope_type, "period": limit.period}],
    )


@functools.lru_cache(maxsize=8)
def _reserve_statement(project: bool, agent: bool, user: bool) -> sa.Select:
    """``_limits_with_windows_query`` and ``_hold_statement`` for its first limit in one
    statement: the limits with their windows (each row also names ``held_window``, the
    first limit's window when the hold was made). The first window's conditional UPDATE
    takes its row lock as ``_hold_statement`` does; a ``warn`` limit has no ceiling."""
    limits = _limits_with_windows_query(project, agent, user).cte("limits")
    first = sa.select(limits).order_by(limits.c.id).limit(1).cte("first_limit")
    held, applied = _fold_and_hold(
        first.c.window_id,
        lambda total: sa.or_(
            first.c.action_on_exceed == LimitAction.WARN.value, total <= first.c.amount_usd
        ),
    )
    values = [
        held.c.id
        if name == "window_id"
        else sa.bindparam(f"hold_{name}", type_=_HOLDS.c[name].type)
        for name in _HOLD_COLUMNS
    ]
    hold = (
        sa.insert(_HOLDS)
        .from_select(list(_HOLD_COLUMNS), sa.select(*values))
        .returning(_HOLDS.c.window_id)
        .cte("hold")
    )
    return (
        sa.select(limits, sa.select(hold.c.window_id).scalar_subquery().label("held_window"))
        .order_by(limits.c.id)
        .add_cte(applied)
    )


def _fold_and_hold(window_id: Any, fits: Any) -> tuple[Any, Any]:
    """The window UPDATE of a hold (CTE ``held``: the window's id when the hold was
    made) that also applies the settlements deferred on the window (CTE ``applied``,
    to add to the statement): a deferred settlement costs no hold of the hot row of its
    own. ``fits(total)`` is the ceiling test of spent + reserved + the hold, folded.

    The deferred holds are claimed ``FOR UPDATE SKIP LOCKED``: one that another
    reservation is folding is left to it, still counted in full in ``reserved``. Locks are taken holds first, window second,
    as ``settle`` and ``release`` take them, and a claimed hold re-checked after a
    concurrent commit is skipped if already applied (READ COMMITTED re-reads it), so
    each deferred settlement is applied once. The claimed holds are marked ``settled``
    only if the window UPDATE happened (a refusal rolls everything back anyway)."""
    amount = sa.bindparam("hold_amount", type_=_WINDOWS.c.reserved.type)
    claimed = (
        sa.select(_HOLDS.c.id, _HOLDS.c.amount, _HOLDS.c.settled_amount)
        .where(_HOLDS.c.window_id == window_id, _HOLDS.c.status == DEFERRED)
        .with_for_update(skip_locked=True, of=_HOLDS)
        .cte("claimed")
    )
    sums = sa.select(
        sa.func.coalesce(sa.func.sum(claimed.c.amount), 0).label("held"),
        sa.func.coalesce(sa.func.sum(claimed.c.settled_amount), 0).label("spent"),
    ).cte("claimed_sums")
    spent = _WINDOWS.c.spent + sums.c.spent
    reserved = _WINDOWS.c.reserved - sums.c.held + amount
    where = [_WINDOWS.c.id == window_id]
    if fits is not None:
        where.append(fits(spent + reserved))
    held = (
        sa.update(_WINDOWS)
        .where(*where)
        .values(reserved=reserved, spent=spent)
        .returning(_WINDOWS.c.id)
        .cte("held")
    )
    applied = (
        sa.update(_HOLDS)
        .where(_HOLDS.c.id == claimed.c.id, sa.exists(sa.select(held.c.id)))
        .values(status="settled")
        .returning(_HOLDS.c.id)
        .cte("applied")
    )
    return held, applied


_WINDOWS = BudgetWindow.__table__
_HOLDS = BudgetReservation.__table__
_HOLD_COLUMNS = (
    "id",
    "window_id",
    "call_key",
    "job_id",
    "amount",
    "status",
    "expires_at",
    "created_at",
)


def _hold(session: Session, hold: Hold, ceiling: Decimal | None) -> bool:
    """ONE statement: add the hold to the window's ``reserved`` when it fits under
    ``ceiling`` (the single conditional UPDATE), and insert the hold row only if it did.
    The hot window row is locked by this statement until the caller commits."""
    if not _one_statement(session):
        return _hold_in_two(session, hold, ceiling)
    params = {f"hold_{name}": getattr(hold, name) for name in _HOLD_COLUMNS}
    params["ceiling"] = ceiling
    if execute_prepared(session, _hold_statement(ceiling is not None), params).first():
        return True
    return _hold_exactly(session, hold, ceiling)


def _hold_exactly(session: Session, hold: Hold, ceiling: Decimal | None) -> bool:
    """A hold refused by the one statement, tried again against the window's true total.

    That statement folds only the deferred settlements its snapshot saw and no other
    reservation was folding; the rest still count their full hold, so it can refuse
    what fits. Here the window row is locked first: no fold can commit meanwhile, and
    the next statement's snapshot sees every deferred settlement that is still to be
    applied, so it tests the ceiling on spent + reserved less all of them (as a read
    does), which is what an immediate settlement would have left. Refusals cost two
    more statements; holds that fit at once, none."""
    if ceiling is None:
        return False  # a ``warn`` limit's hold always fits
    session.execute(
        sa.select(_WINDOWS.c.id).where(_WINDOWS.c.id == hold.window_id).with_for_update()
    )
    params = {f"hold_{name}": getattr(hold, name) for name in _HOLD_COLUMNS}
    params["ceiling"] = ceiling
    return execute_prepared(session, _exact_hold_statement(), params).first() is not None


def _one_statement(session: Session) -> bool:
    """PostgreSQL runs a hold, settle or release as one statement (data-modifying CTEs);
    the embedded SQLite has no such CTEs and takes the statements one by one (it
    serialises writers, so the conditional UPDATE is as safe)."""
    return session.get_bind().dialect.name == "postgresql"


def _hold_in_two(session: Session, hold: Hold, ceiling: Decimal | None) -> bool:
    update = sa.update(_WINDOWS).where(_WINDOWS.c.id == hold.window_id)
    if ceiling is not None:
        update = update.where(_WINDOWS.c.spent + _WINDOWS.c.reserved + hold.amount <= ceiling)
    if not session.execute(update.values(reserved=_WINDOWS.c.reserved + hold.amount)).rowcount:
        return False
    session.execute(sa.insert(_HOLDS).values({n: getattr(hold, n) for n in _HOLD_COLUMNS}))
    return True


def _close_holds_one_by_one(
    session: Session, call_key: str, status: str
) -> list[tuple[uuid.UUID, Decimal]]:
    """SQLite's ``_close_holds``: the call's open holds marked ``status``, their (window
    id, amount) returned for the window UPDATEs that follow."""
    holds = session.execute(
        sa.select(_HOLDS.c.id, _HOLDS.c.window_id, _HOLDS.c.amount).where(
            _HOLDS.c.call_key == call_key, _HOLDS.c.status == "held"
        )
    ).all()
    if holds:
        session.execute(
            sa.update(_HOLDS).where(_HOLDS.c.id.in_([h.id for h in holds])).values(status=status)
        )
    return [(h.window_id, h.amount) for h in holds]


@functools.lru_cache(maxsize=1)
def _exact_hold_statement() -> sa.Insert:
    """``_hold_statement`` whose ceiling test counts every settlement deferred on the
    window at its actual cost, folded here or not: only with the window row locked
    (``_hold_exactly``), where no fold can commit between the snapshot and the test."""
    window_id = sa.bindparam("hold_window_id", type_=_WINDOWS.c.id.type)
    ceiling = sa.bindparam("ceiling", type_=_WINDOWS.c.reserved.type)
    amount = sa.bindparam("hold_amount", type_=_WINDOWS.c.reserved.type)
    deferred_spent, deferred_held = deferred_sums(window_id)
    exact = _WINDOWS.c.spent + deferred_spent + _WINDOWS.c.reserved - deferred_held + amount
    return _hold_statement(True, lambda _folded: exact <= ceiling)


@functools.lru_cache(maxsize=4)
def _hold_statement(capped: bool, fits: Any = None) -> sa.Insert:
    ceiling = sa.bindparam("ceiling", type_=_WINDOWS.c.reserved.type)
    held, applied = _fold_and_hold(
        sa.bindparam("hold_window_id", type_=_WINDOWS.c.id.type),
        fits or ((lambda total: total <= ceiling) if capped else None),
    )
    values = [
        held.c.id
        if name == "window_id"
        else sa.bindparam(f"hold_{name}", type_=_HOLDS.c[name].type)
        for name in _HOLD_COLUMNS
    ]
    return (
        sa.insert(_HOLDS)
        .from_select(list(_HOLD_COLUMNS), sa.select(*values))
        .add_cte(held)
        .add_cte(applied)
        .returning(_HOLDS.c.id)
    )


def settle(
    session: Session, *, call_key: str, actual: Decimal, scope: CallScope | None = None
) -> list[Any]:
    """Charge ``actual`` to each window the call reserved on and release the hold; the
    windows charged are returned (their columns, as ``raise_alerts`` reads them).

    With ``scope``, also to the current window of every applicable limit the call holds
    nothing on (a limit created, switched on, or a period begun while the call was in
    flight), so window totals match the ledger exactly. The call's usage row must be
    written before, in the same transaction.

    Call it last in the transaction: the window rows it updates are shared by every
    concurrent call on the same limit.
    """
    session.flush()  # the call's usage row first (these statements are Core: no autoflush)
    windows: list[Any]
    if _one_statement(session) and scope is not None:
        return _settle_scoped(session, call_key=call_key, actual=actual, scope=scope)
    if _one_statement(session):
        windows = list(
            execute_prepared(session, _settle_statement(), {"key": call_key, "actual": actual})
        )
    else:
        windows = []
        for window_id, amount in _close_holds_one_by_one(session, call_key, "settled"):
            session.execute(
                sa.update(_WINDOWS)
                .where(_WINDOWS.c.id == window_id)
                .values(reserved=_WINDOWS.c.reserved - amount, spent=_WINDOWS.c.spent + actual)
            )
            window = session.get(BudgetWindow, window_id, populate_existing=True)
            if window is not None:
                windows.append(window)
    if scope is not None and actual:
        windows.extend(_charge_the_unheld(session, call_key, scope, windows, actual))
    return windows


def _charge_the_unheld(
    session: Session, call_key: str, scope: CallScope, windows: list[Any], actual: Decimal
) -> list[Any]:
    """``_charge_unheld_windows`` for the windows neither in ``windows`` (charged by the
    settlement) nor under a hold of the call's that it deferred (charged, not returned)."""
    held = {w.id for w in windows}
    held.update(
        session.scalars(
            sa.select(_HOLDS.c.window_id).where(
                _HOLDS.c.call_key == call_key, _HOLDS.c.status == "deferred"
            )
        )
    )
    return _charge_unheld_windows(session, scope, held, actual)


def _settle_scoped(
    session: Session, *, call_key: str, actual: Decimal, scope: CallScope
) -> list[Any]:
    """PostgreSQL, ``settle`` with a scope in one statement (``_settle_scoped_statement``):
    the settlement, and the charge of every applicable limit's current window the call
    holds nothing on. A limit whose current window does not exist yet (its first call of
    the period) is left to ``_charge_unheld_windows``, which creates it from the ledger."""
    now = utcnow()
    shape = (scope.project_id is not None, scope.agent_id is not None, scope.user_id is not None)
    params = _scope_params(scope, now) | {"key": call_key, "actual": actual}
    rows = execute_prepared(session, _settle_scoped_statement(*shape), params).all()
    windows = [row for row in rows if row.id is not None]
    if len(windows) < len(rows):  # the marker row: a window to create
        windows.extend(_charge_the_unheld(session, call_key, scope, windows, actual))
    return windows


@functools.lru_cache(maxsize=8)
def _settle_scoped_statement(project: bool, agent: bool, user: bool) -> sa.CompoundSelect:
    """``_settle_statement`` and what ``_charge_unheld_windows`` does for windows that
    exist, in one statement: the holds deferred or settled (each as before), the windows
    settled, and the current windows of the applicable limits (``_limits_with_windows``)
    that neither a settled nor a deferred hold of the call is on, charged ``:actual``
    (not if it is 0). Rows: the windows charged (``_window_totals`` and the limit's alert
    settings), then one row of NULLs if an applicable limit has no current window yet
    (the caller charges it, ``_charge_unheld_windows``, with the rows' windows held).

    Which windows the call held comes from the two hold UPDATEs' RETURNING (and its
    holds deferred before), as the statements it replaces read it, so a hold the sweep
    released meanwhile is charged as unheld, as before. The snapshot is the statement's
    own, taken before it waits on any window's lock, where the limits' read was a
    statement later; a limit or window committed in between is charged by the next
    reservation's read as it was by a settlement starting a moment earlier."""
    actual = sa.bindparam("actual", type_=_WINDOWS.c.spent.type)
    deferred, settled_holds = _settle_holds(actual)
    limits = BudgetLimit.__table__
    returned = _charged_window_columns()
    settled = (
        sa.update(_WINDOWS)
        .where(_WINDOWS.c.id == settled_holds.c.window_id, limits.c.id == _WINDOWS.c.limit_id)
        .values(
            reserved=_WINDOWS.c.reserved - settled_holds.c.amount,
            spent=_WINDOWS.c.spent + actual,
        )
        .returning(*returned)
        .cte("settled_windows")
    )
    applicable = _limits_with_windows_query(project, agent, user).cte("applicable")
    unheld = (
        sa.update(_WINDOWS)
        .where(
            _WINDOWS.c.id == applicable.c.window_id,
            limits.c.id == _WINDOWS.c.limit_id,
            actual != 0,
            ~sa.exists().where(settled_holds.c.window_id == _WINDOWS.c.id),
            ~sa.exists().where(deferred.c.window_id == _WINDOWS.c.id),
            # and those deferred by an earlier settlement of the call (as ``settle`` reads)
            ~sa.exists().where(
                _HOLDS.c.window_id == _WINDOWS.c.id,
                _HOLDS.c.call_key == sa.bindparam("key"),
                _HOLDS.c.status == "deferred",
            ),
        )
        .values(spent=_WINDOWS.c.spent + actual)
        .returning(*returned)
        .cte("unheld_windows")
    )
    missing = sa.select(*(sa.cast(sa.null(), c.type).label(c.name) for c in settled.c)).where(
        actual != 0, sa.exists().where(applicable.c.window_id.is_(None))
    )
    return sa.union_all(sa.select(*settled.c), sa.select(*unheld.c), missing).add_cte(deferred)


@functools.lru_cache(maxsize=1)
def _settle_statement() -> sa.Update:
    """The windows charged, read back by the UPDATE's RETURNING (rows with the window's
    columns, what ``raise_alerts`` reads), each with its limit's alert settings
    (``limit_*``): a settlement that crosses no alert level reads nothing more while it
    holds the window's row lock.

    A hold whose settlement ``_deferrable`` is only marked ``deferred`` with its actual
    cost (CTE ``deferred_holds``): its window is not touched, so not locked; the next
    reservation on the window applies it (``_fold_and_hold``). The other holds settle on
    their window here, as before. Both CTEs test the same condition on one snapshot, so
    each open hold is closed by exactly one of them."""
    actual = sa.bindparam("actual", type_=_WINDOWS.c.spent.type)
    deferred, settled = _settle_holds(actual)
    limits = BudgetLimit.__table__
    return (
        sa.update(_WINDOWS)
        .where(_WINDOWS.c.id == settled.c.window_id, limits.c.id == _WINDOWS.c.limit_id)
        .values(reserved=_WINDOWS.c.reserved - settled.c.amount, spent=_WINDOWS.c.spent + actual)
        .returning(*_charged_window_columns())
        .add_cte(deferred)
    )


def _settle_holds(actual: Any) -> tuple[Any, Any]:
    """The call's open holds (``:key``) closed as a settlement closes them, as two CTEs
    on one snapshot, so each hold is closed by exactly one: ``deferred_holds`` (marked
    ``deferred`` with the actual cost, their windows untouched; RETURNING ``window_id``)
    and the holds settled on their window (``_close_holds``)."""
    deferrable = _deferrable(actual)
    deferred = (
        sa.update(_HOLDS)
        .where(_HOLDS.c.call_key == sa.bindparam("key"), _HOLDS.c.status == "held", deferrable)
        .values(status="deferred", settled_amount=actual)
        .returning(_HOLDS.c.window_id)
        .cte("deferred_holds")
    )
    return deferred, _close_holds("settled", actual, sa.not_(deferrable))


def _charged_window_columns() -> list[Any]:
    """What a settlement returns of each window it charged: the totals and the limit's
    alert settings (``limit_*``)."""
    limits = BudgetLimit.__table__
    return [
        *_window_totals(),
        *(limits.c[name].label(f"limit_{name}") for name in _ALERT_SETTINGS),
    ]


def _deferrable(actual: Any) -> Any:
    """Whether settling the open hold (the statement's ``budget_reservations`` row) may
    be deferred: ``actual`` fits in the hold, and no alert level could be crossed.

    The window is read without a lock (its committed values). Its ``spent + reserved``
    bounds the spend the window will have once every deferred and held call is applied
    within its hold (this one included: each counts its full hold until applied), so if
    that is under the alert level and the amount, no alert can be due and the settlement
    changes nothing a reader sees but the totals (which every read folds in). A limit
    switched off or deleted raises no alert.

    Under the alert level whether or not it alerted already: near its amount a window
    settles at once as before, so a deferred hold (counted in full until the next
    reservation folds it) rarely stands between a reservation and the amount (where it
    does, ``_hold_exactly`` decides). Otherwise the hold settles on the window at once,
    and ``raise_alerts`` judges the crossing as before."""
    limits = BudgetLimit.__table__
    bound = _WINDOWS.c.spent + _WINDOWS.c.reserved
    return sa.exists().where(
        _WINDOWS.c.id == _HOLDS.c.window_id,
        limits.c.id == _WINDOWS.c.limit_id,
        _HOLDS.c.amount >= actual,
        sa.or_(
            limits.c.is_active.is_(False),
            limits.c.deleted_at.is_not(None),
            limits.c.amount_usd <= 0,
            sa.and_(
                bound < limits.c.amount_usd * limits.c.alert_threshold,
                bound < limits.c.amount_usd,
            ),
        ),
    )


def _window_totals() -> list[Any]:
    """A window's columns for a RETURNING, ``spent`` and ``reserved`` the true totals
    (what ``BudgetWindow`` reads): settlements deferred on it folded in."""
    deferred_spent, deferred_held = deferred_sums(_WINDOWS.c.id)
    return [
        (column + deferred_spent).label("spent")
        if column.key == "spent"
        else (column - deferred_held).label("reserved")
        if column.key == "reserved"
        else column
        for column in _WINDOWS.c
    ]


_ALERT_SETTINGS = ("amount_usd", "alert_threshold", "is_active", "deleted_at")


def _crosses_nothing(window: Any) -> bool:
    """True when ``window`` carries its limit's alert settings (a row from
    ``_settle_statement``) and no alert is due on it: no need to load the limit."""
    amount = getattr(window, "limit_amount_usd", None)
    if amount is None:
        return False
    if not window.limit_is_active or window.limit_deleted_at is not None or amount <= 0:
        return True
    ratio = window.spent / amount
    threshold_due = ratio >= window.limit_alert_threshold and window.threshold_alerted_at is None
    exceeded_due = ratio >= 1 and window.exceeded_alerted_at is None
    return not (threshold_due or exceeded_due)


def _close_holds(status: str, actual: Any = None, *where: Any) -> Any:
    """The open holds of the call ``:key`` marked ``status``, as a CTE of (window_id,
    amount) for the window UPDATE that follows in the same statement. (A parameter named
    like a column of an UPDATE's table would be taken as a SET value: ``key``.) The UPDATE's row
    locks mean a settle and the sweep's release cannot both close one hold: the second
    re-reads the row after the first commits, finds it closed, and skips it."""
    values: dict[str, Any] = {"status": status}
    if actual is not None:
        values["settled_amount"] = actual
    return (
        sa.update(_HOLDS)
        .where(_HOLDS.c.call_key == sa.bindparam("key"), _HOLDS.c.status == "held", *where)
        .values(values)
        .returning(_HOLDS.c.window_id, _HOLDS.c.amount)
        .cte(f"{status}_holds")
    )


def _charge_unheld_windows(
    session: Session, scope: CallScope, held: set[uuid.UUID], actual: Decimal
) -> list[Any]:
    """The windows charged (their columns, as ``settle`` returns them)."""
    now = utcnow()
    charged = []
    for limit in _limits_with_windows(session, scope, now):
        if limit.window_id in held:
            continue
        start, end = window_bounds(limit.period, now)
        # Created here, its ledger sum already counts this call's (uncommitted) usage row;
        # created by another transaction, that sum could not see it: add it.
        if limit.window_id is None and _create_window(session, limit, start, end):
            continue
        window = session.execute(
            sa.update(_WINDOWS)
            .where(_WINDOWS.c.limit_id == limit.id, _WINDOWS.c.window_start == start)
            .values(spent=_WINDOWS.c.spent + actual)
            .returning(*_window_totals())
        ).one()
        if window.id not in held:
            charged.append(window)
    return charged


def holds_of(session: Session, *, call_key: str) -> list[BudgetReservation]:
    """Every hold a call made (any status): a retried reservation finds its own."""
    return list(
        session.scalars(sa.select(BudgetReservation).where(BudgetReservation.call_key == call_key))
    )


def release(session: Session, *, call_key: str) -> None:
    if _one_statement(session):
        session.execute(_release_statement(), {"key": call_key})
        return
    for window_id, amount in _close_holds_one_by_one(session, call_key, "released"):
        session.execute(
            sa.update(_WINDOWS)
            .where(_WINDOWS.c.id == window_id)
            .values(reserved=_WINDOWS.c.reserved - amount)
        )


@functools.lru_cache(maxsize=1)
def _release_statement() -> sa.Update:
    released = _close_holds("released")
    return (
        sa.update(_WINDOWS)
        .where(_WINDOWS.c.id == released.c.window_id)
        .values(reserved=_WINDOWS.c.reserved - released.c.amount)
    )


def expired_call_keys(session: Session, now: datetime | None = None) -> list[str]:
    return list(
        session.scalars(
            sa.select(BudgetReservation.call_key)
            .where(
                BudgetReservation.status == "held", BudgetReservation.expires_at < (now or utcnow())
            )
            .distinct()
        )
    )


def raise_alerts(session: Session, windows: list[BudgetWindow]) -> list[Notification]:
    """Crossing the alert threshold and crossing 100% each notify once per window."""
    created = []
    for window in windows:
        if _crosses_nothing(window):
            continue
        limit = session.get(BudgetLimit, window.limit_id)
        if limit is None or not limit.is_active or limit.deleted_at or limit.amount_usd <= 0:
            continue
        ratio = window.spent / limit.amount_usd
        for column, reached, severity, what in (
            (
                BudgetWindow.threshold_alerted_at,
                ratio >= limit.alert_threshold,
                "warning",
                "threshold",
            ),
            (BudgetWindow.exceeded_alerted_at, ratio >= 1, "critical", "exceeded"),
        ):
            if not reached:
                continue
            first = session.execute(
                sa.update(BudgetWindow)
                .where(BudgetWindow.id == window.id, column.is_(None))
                .values({column.key: utcnow()})
                .execution_options(synchronize_session=False)
            ).rowcount
            if first:
                created.append(_alert(session, limit, window, ratio, severity, what))
    return created


def limit_reached_alert(session: Session, *, limit_id: uuid.UUID | str) -> Notification | None:
    """A ``block`` or ``pause`` limit refused a hold: for the caller the limit is reached,
    though settled spend may sit just under 100% (the next call's worst case did not fit).
    Alerts like crossing 100% does, sharing its once-per-window mark, so the people whose
    jobs stop hear about it once, not once per refused call."""
    limit = session.get(BudgetLimit, uuid.UUID(str(limit_id)))
    if limit is None or limit.deleted_at is not None or limit.amount_usd <= 0:
        return None
    window = current_window(session, limit)
    if window.exceeded_alerted_at is not None:
        return None  # read without a lock first: the window row is the hot one
    first = session.execute(
        sa.update(BudgetWindow)
        .where(BudgetWindow.id == window.id, BudgetWindow.exceeded_alerted_at.is_(None))
        .values(exceeded_alerted_at=utcnow())
        .execution_options(synchronize_session=False)
    ).rowcount
    if not first:
        return None
    session.refresh(window)
    return _alert(session, limit, window, window.spent / limit.amount_usd, "critical", "exceeded")


SCOPE_LABELS = {
    ScopeType.GLOBAL: "Organization",
    ScopeType.ORGANIZATION: "Organization",
    ScopeType.PROJECT: "Project",
    ScopeType.AGENT: "Agent",
    ScopeType.USER: "User",
}


def scope_names(session: Session, limits: list[BudgetLimit]) -> dict[uuid.UUID, str | None]:
    """The name of what each limit covers (project, agent, user or organization), with one
    query per scope type present."""
    by_type: dict[str, set[uuid.UUID]] = {}
    for limit in limits:
        target = limit.organization_id if limit.scope_id is None else limit.scope_id
        by_type.setdefault(_scope_model_key(limit), set()).add(target)
    names: dict[uuid.UUID, str | None] = {}
    columns = {
        "organization": (Organization.id, Organization.name),
        "project": (Project.id, Project.name),
        "agent": (Agent.id, Agent.name),
        "user": (User.id, sa.func.coalesce(User.full_name, User.username, User.email)),
    }
    for key, ids in by_type.items():
        id_column, name_column = columns[key]
        rows = session.execute(sa.select(id_column, name_column).where(id_column.in_(ids)))
        names.update((row_id, name) for row_id, name in rows)
    return {
        limit.id: names.get(limit.organization_id if limit.scope_id is None else limit.scope_id)
        for limit in limits
    }


def _scope_model_key(limit: BudgetLimit) -> str:
    if limit.scope_type in (ScopeType.GLOBAL, ScopeType.ORGANIZATION):
        return "organization"
    return limit.scope_type


def percent_text(ratio: Decimal) -> str:
    """0.855 -> "85.5", 0.8 -> "80"."""
    return format((ratio * 100).quantize(Decimal("0.1")).normalize(), "f")


def alert_payload(
    limit: BudgetLimit, window: BudgetWindow, scope_name: str | None, level: str
) -> dict[str, Any]:
    """Seed 001's ``budget_alert`` (level, scope, current, limit, percentage as a fraction,
    message), money as strings, plus which limit and window it is about."""
    ratio = window.spent / limit.amount_usd
    label = SCOPE_LABELS[ScopeType(limit.scope_type)]
    return {
        "type": "budget_alert",
        "level": level,
        "scope": {
            "type": limit.scope_type,
            "id": str(limit.scope_id) if limit.scope_id else None,
            "name": scope_name,
        },
        "current": money_text(window.spent),
        "limit": money_text(limit.amount_usd),
        "percentage": float(round(ratio, 4)),
        "message": (
            f"{label} '{scope_name}' at {percent_text(ratio)}% of {limit.period} limit "
            f"'{limit.name}'"
        ),
        "limit_id": str(limit.id),
        "limit_name": limit.name,
        "period": limit.period,
        "threshold": float(limit.alert_threshold),
        "action": limit.action_on_exceed,
        "window_start": window.window_start.isoformat(),
        "window_end": window.window_end.isoformat() if window.window_end else None,
    }


def socket_alert(data: dict[str, Any]) -> dict[str, Any]:
    """Seed 001's Socket.IO ``budget_alert``: ``current`` and ``limit`` are JSON numbers, as
    its example and the dialect's REST alerts write them; the exact decimal strings stay
    as ``spent`` and ``amount_usd`` (the notification and webhook keep the strings)."""
    return {
        **data,
        "current": float(Decimal(data["current"])),
        "limit": float(Decimal(data["limit"])),
        "spent": data["current"],
        "amount_usd": data["limit"],
    }


def _alert(
    session: Session,
    limit: BudgetLimit,
    window: BudgetWindow,
    ratio: Decimal,
    severity: str,
    what: str,
) -> Notification:
    data = alert_payload(limit, window, scope_names(session, [limit])[limit.id], severity)
    title = f"Budget {'limit reached' if what == 'exceeded' else 'threshold reached'}: {limit.name}"
    note = Notification(
        organization_id=limit.organization_id,
        type="budget_alert",
        severity=severity,
        title=title,
        message=data["message"],
        data=data,
    )
    session.add(note)
    session.flush()
    if limit.organization_id is not None:
        webhooks.record_event(
            session, organization_id=limit.organization_id, event_type="budget.alert",
            data={**data, "alert": what},
        )  # fmt: skip
    live.emit_after_commit(
        session, "budget_alert", socket_alert(data), organization_id=limit.organization_id
    )
    log.info("budget alert %s for limit %s at %s%%", what, limit.id, percent_text(ratio))
    return note


def blocking_limit_spent(session: Session, scope: CallScope) -> BudgetLimit | None:
    """A ``block`` limit already at its amount: the submission is refused with 402."""
    for limit in applicable_limits(session, scope):
        if limit.action_on_exceed != LimitAction.BLOCK:
            continue
        # Settled spend only: holds in flight may still be released.
        if current_window(session, limit).spent >= limit.amount_usd:
            return limit
    return None
