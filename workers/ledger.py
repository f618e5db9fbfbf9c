"""The usage ledger: one row per provider call that cost money, written in the
transaction that settles its budget hold."""

from __future__ import annotations

import functools
import uuid
from decimal import Decimal
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from models import Job, JobStep, UsageRecord, utcnow

_USAGE = UsageRecord.__table__
_COLUMNS = (
    "id", "organization_id", "user_id", "project_id", "agent_id", "job_id", "phase_id",
    "step_id", "call_key", "provider", "model", "prompt_tokens", "completion_tokens", "cost",
    "created_at",
)  # fmt: skip


@functools.cache
def insert_statement() -> sa.Insert:
    """Built once (a Core INSERT, no ORM unit of work): one parameter per column (``u_*``,
    see ``usage_params``). Also a CTE of the completion's one statement on PostgreSQL
    (workers/engine/completion.py)."""
    return sa.insert(_USAGE).values(
        {c: sa.bindparam(f"u_{c}", type_=_USAGE.c[c].type) for c in _COLUMNS}
    )


def usage_params(
    *,
    job: Job,
    step: JobStep,
    call_key: str,
    provider: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
) -> dict[str, Any]:
    """``insert_statement``'s parameters for one call; ``u_id`` is the new row's id.
    ``model`` is provider-qualified ("groq/llama-3.1-70b"): the one that answered."""
    return {
        "u_id": uuid.uuid4(),
        "u_organization_id": job.organization_id,
        "u_user_id": job.created_by_id,
        "u_project_id": job.project_id,
        "u_agent_id": job.agent_id,
        "u_job_id": job.id,
        "u_phase_id": step.phase_id,
        "u_step_id": step.id,
        # The unique key makes a second write of the same call fail instead of
        # charging twice.
        "u_call_key": call_key,
        "u_provider": provider,
        "u_model": model,
        "u_prompt_tokens": prompt_tokens,
        "u_completion_tokens": completion_tokens,
        "u_cost": cost,
        "u_created_at": utcnow(),
    }


def record_usage(session: Session, *, usage: dict[str, Any]) -> None:
    """One call's ledger row: ``usage`` is ``usage_params``' answer."""
    session.execute(insert_statement(), usage)
