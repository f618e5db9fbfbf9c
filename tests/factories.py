"""Factories: real rows through a real session; tokens minted with the app's JWT config."""

from __future__ import annotations

import uuid
from decimal import Decimal
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy.orm import Session

from models import (
    Agent,
    BudgetLimit,
    Job,
    JobPhase,
    JobStep,
    Notification,
    Organization,
    Project,
    Role,
    UsageRecord,
    User,
)

_hasher = PasswordHasher(time_cost=1, memory_cost=8192, parallelism=1)
DEFAULT_PASSWORD = "correct horse battery staple"


def organization(session: Session, **fields: Any) -> Organization:
    suffix = uuid.uuid4().hex[:8]
    org = Organization(name=fields.pop("name", f"Org {suffix}"), slug=f"org-{suffix}", **fields)
    session.add(org)
    session.flush()
    return org


def user(session: Session, org: Organization | None = None, **fields: Any) -> User:
    org = org or organization(session)
    suffix = uuid.uuid4().hex[:8]
    row = User(
        organization_id=org.id,
        email=fields.pop("email", f"user-{suffix}@example.com"),
        username=fields.pop("username", f"user_{suffix}"),
        password_hash=_hasher.hash(fields.pop("password", DEFAULT_PASSWORD)),
        role=fields.pop("role", Role.ADMIN.value),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def project(session: Session, org: Organization, **fields: Any) -> Project:
    row = Project(organization_id=org.id, name=fields.pop("name", "Project"), **fields)
    session.add(row)
    session.flush()
    return row


def agent(session: Session, org: Organization, **fields: Any) -> Agent:
    config = fields.pop("config", {"providers": ["sim"], "max_retries": 2, "timeout_seconds": 30})
    row = Agent(organization_id=org.id, name=fields.pop("name", "Agent"), config=config, **fields)
    session.add(row)
    session.flush()
    return row


def job(session: Session, org: Organization, **fields: Any) -> Job:
    """A job row as the engine leaves it (no canvas is sent)."""
    row = Job(
        organization_id=org.id,
        kind=fields.pop("kind", "task"),
        status=fields.pop("status", "completed"),
        title=fields.pop("title", "A job"),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def step(session: Session, job_row: Job, **fields: Any) -> JobStep:
    """One step (in a one-step phase) of ``job_row``."""
    phase = JobPhase(job_id=job_row.id, position=0, code="Phase 0", name="execution")
    session.add(phase)
    session.flush()
    row = JobStep(
        job_id=job_row.id,
        phase_id=phase.id,
        position=0,
        name=fields.pop("name", "execution"),
        status=fields.pop("status", "completed"),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def usage_record(session: Session, org: Organization, **fields: Any) -> UsageRecord:
    """One ledger row (a provider call); pass ``created_at`` to place it in time."""
    cost = Decimal(str(fields.pop("cost", "0.01")))
    row = UsageRecord(
        organization_id=org.id,
        provider=fields.pop("provider", "sim"),
        model=fields.pop("model", "sim/echo"),
        prompt_tokens=fields.pop("prompt_tokens", 100),
        completion_tokens=fields.pop("completion_tokens", 50),
        cost=cost,
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def budget_limit(session: Session, org: Organization, **fields: Any) -> BudgetLimit:
    row = BudgetLimit(
        organization_id=org.id,
        name=fields.pop("name", "limit"),
        scope_type=fields.pop("scope_type", "organization"),
        period=fields.pop("period", "daily"),
        amount_usd=Decimal(str(fields.pop("amount_usd", "10"))),
        alert_threshold=Decimal(str(fields.pop("alert_threshold", "0.8"))),
        action_on_exceed=fields.pop("action_on_exceed", "block"),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def notification(session: Session, org: Organization, **fields: Any) -> Notification:
    row = Notification(
        organization_id=org.id,
        type=fields.pop("type", "budget_alert"),
        severity=fields.pop("severity", "warning"),
        title=fields.pop("title", "Budget threshold reached"),
        message=fields.pop("message", "limit at 80%"),
        data=fields.pop("data", {}),
        **fields,
    )
    session.add(row)
    session.flush()
    return row


def auth_headers(app: Any, row: User) -> dict[str, str]:
    from api.auth.tokens import access_token_for

    with app.app_context():
        token = access_token_for(
            user_id=str(row.id),
            organization_id=str(row.organization_id),
            role=row.role,
            family=str(uuid.uuid4()),
        )
    return {"Authorization": f"Bearer {token}"}
