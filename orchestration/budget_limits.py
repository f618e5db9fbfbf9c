"""Budget limits CRUD (seed 001), scoped to the caller's organization.

Every answer carries the limit's current window (spent, reserved, remaining, percentage),
read through ``budget.current_window`` so a new limit counts what its scope already spent.
Windows read the limit's amount, threshold and action on every call, so changing those
just applies; a limit's scope and period define which ledger rows its window sums, so
they cannot change (create a new limit instead).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Agent, BudgetLimit, BudgetWindow, Project, ScopeType, User, utcnow
from models.db import transaction
from orchestration import budget
from orchestration.errors import NotFound, field_error
from orchestration.listing import Page, PageRequest, apply_sort, paginate
from orchestration.principal import Principal

# Scope types that name one row (scope_id required); the others cover the organization.
SCOPES_WITH_ID = (ScopeType.PROJECT, ScopeType.AGENT, ScopeType.USER)
FIXED_FIELDS = ("scope_type", "scope_id", "period")
SORTS = {
    "name": BudgetLimit.name,
    "amount_usd": BudgetLimit.amount_usd,
    "period": BudgetLimit.period,
    "scope_type": BudgetLimit.scope_type,
    "created_at": BudgetLimit.created_at,
    "updated_at": BudgetLimit.updated_at,
}


@dataclass
class LimitFilters:
    scope_type: str | None = None
    period: str | None = None
    action_on_exceed: str | None = None
    is_active: bool | None = None


@dataclass
class LimitView:
    limit: BudgetLimit
    window: BudgetWindow
    scope_name: str | None = None

    @property
    def remaining(self) -> Decimal:
        """What new calls may still hold: the amount less settled and held spend."""
        left = self.limit.amount_usd - self.window.spent - self.window.reserved
        return max(left, Decimal(0))

    @property
    def percentage(self) -> float:
        """Settled spend as a fraction of the amount (seed 001: 0.25 is a quarter)."""
        if self.limit.amount_usd <= 0:  # not creatable through the API; never divide by it
            return 0.0
        return float(round(self.window.spent / self.limit.amount_usd, 4))


# -- helpers (session in, never commit) ---------------------------------------------------


def owned_limit(
    session: Session, *, principal: Principal, limit_id: uuid.UUID, lock: bool = False
) -> BudgetLimit:
    stmt = sa.select(BudgetLimit).where(
        BudgetLimit.id == limit_id,
        BudgetLimit.organization_id == principal.organization_id,
        BudgetLimit.deleted_at.is_(None),
    )
    limit = session.scalar(stmt.with_for_update() if lock else stmt)
    if limit is None:
        raise NotFound(f"Budget limit {limit_id} not found")
    return limit


def _check_scope(
    session: Session, *, principal: Principal, scope_type: str, scope_id: uuid.UUID | None
) -> None:
    """scope_id names one of the caller's projects, agents or users; another
    organization's id is a 404, like a missing one."""
    if scope_type not in SCOPES_WITH_ID:
        if scope_id is not None:
            raise field_error("scope_id", f"must be null for scope_type '{scope_type}'")
        return
    if scope_id is None:
        raise field_error("scope_id", f"is required for scope_type '{scope_type}'")
    model = {ScopeType.PROJECT: Project, ScopeType.AGENT: Agent, ScopeType.USER: User}[
        ScopeType(scope_type)
    ]
    owner = session.scalar(sa.select(model.organization_id).where(model.id == scope_id))
    if owner != principal.organization_id:
        raise NotFound(
            f"{scope_type.capitalize()} {scope_id} not found",
            [{"field": "scope_id", "message": "not found"}],
        )


def _views(session: Session, limits: list[BudgetLimit]) -> list[LimitView]:
    windows = budget.current_windows(session, limits)
    names = budget.scope_names(session, limits)
    return [LimitView(limit, windows[limit.id], names.get(limit.id)) for limit in limits]


def _refresh_alerts(session: Session, limit: BudgetLimit, *, rearm: bool = False) -> None:
    """A limit created or changed onto a window already past a level alerts now (once
    per window, as at settle). After a new amount or threshold, a level the window is now
    below may alert again when spend crosses it."""
    window = budget.current_window(session, limit)
    if rearm:
        budget.rearm_alerts(session, limit, window)
    if limit.is_active:
        budget.raise_alerts(session, [window])


# -- commands and queries ------------------------------------------------------------------


def create_limit(
    sessions: sessionmaker[Session], *, principal: Principal, data: dict[str, Any]
) -> LimitView:
    with transaction(sessions) as session:
        _check_scope(
            session,
            principal=principal,
            scope_type=data["scope_type"],
            scope_id=data.get("scope_id"),
        )
        limit = BudgetLimit(
            organization_id=principal.organization_id,
            created_by_id=principal.user_id,
            name=data["name"],
            scope_type=data["scope_type"],
            scope_id=data.get("scope_id"),
            amount_usd=data["amount_usd"],
            period=data["period"],
            alert_threshold=data["alert_threshold"],
            action_on_exceed=data["action_on_exceed"],
            is_active=data["is_active"],
        )
        session.add(limit)
        session.flush()
        _refresh_alerts(session, limit)
        return _views(session, [limit])[0]


def list_limits(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    filters: LimitFilters,
    page: PageRequest,
) -> Page[LimitView]:
    stmt = sa.select(BudgetLimit).where(
        BudgetLimit.organization_id == principal.organization_id,
        BudgetLimit.deleted_at.is_(None),
    )
    for column, value in (
        (BudgetLimit.scope_type, filters.scope_type),
        (BudgetLimit.period, filters.period),
        (BudgetLimit.action_on_exceed, filters.action_on_exceed),
        (BudgetLimit.is_active, filters.is_active),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    stmt = apply_sort(stmt, page.sort, SORTS, BudgetLimit.created_at.desc()).order_by(
        BudgetLimit.id
    )
    # A transaction: a limit's first look at a new period creates that window.
    with transaction(sessions) as session:
        result = paginate(session, stmt, page)
        items = _views(session, result.items)
    return result.with_items(items)


def get_limit(
    sessions: sessionmaker[Session], *, principal: Principal, limit_id: uuid.UUID
) -> LimitView:
    with transaction(sessions) as session:
        limit = owned_limit(session, principal=principal, limit_id=limit_id)
        return _views(session, [limit])[0]


def update_limit(
    sessions: sessionmaker[Session],
    *,
    principal: Principal,
    limit_id: uuid.UUID,
    changes: dict[str, Any],
) -> LimitView:
    """Amount, threshold, action, name and is_active apply at once. Scope and period are
    fixed: the window's spend was summed for them."""
    with transaction(sessions) as session:
        limit = owned_limit(session, principal=principal, limit_id=limit_id, lock=True)
        for name in FIXED_FIELDS:
            if name in changes and changes[name] != getattr(limit, name):
                raise field_error(
                    name,
                    "cannot be changed: the current window's spend was counted for this "
                    "scope and period; create a new limit (and delete this one) instead",
                )
        reactivated = changes.get("is_active") is True and not limit.is_active
        rearm = any(
            name in changes and changes[name] != getattr(limit, name)
            for name in ("amount_usd", "alert_threshold")
        )
        for name in ("name", "amount_usd", "alert_threshold", "action_on_exceed", "is_active"):
            if name in changes:
                setattr(limit, name, changes[name])
        limit.updated_at = utcnow()
        session.flush()
        if reactivated:
            budget.resync_window(session, limit)
        _refresh_alerts(session, limit, rearm=rearm)
        return _views(session, [limit])[0]


def delete_limit(
    sessions: sessionmaker[Session], *, principal: Principal, limit_id: uuid.UUID
) -> None:
    """The limit stops applying at once. Its rows stay (hidden): a call that already
    reserved on it settles as usual, and a job it paused stays paused until resumed."""
    with transaction(sessions) as session:
        limit = owned_limit(session, principal=principal, limit_id=limit_id, lock=True)
        limit.deleted_at = utcnow()
        limit.is_active = False
        limit.updated_at = limit.deleted_at
