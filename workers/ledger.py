"""The usage ledger: one row per provider call that cost money, written in the
transaction that settles its budget hold."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy.orm import Session

from models import Job, JobStep, UsageRecord


def record_usage(
    session: Session,
    *,
    job: Job,
    step: JobStep,
    call_key: str,
    provider: str,
    model: str,
    prompt_tokens: int,
    completion_tokens: int,
    cost: Decimal,
) -> UsageRecord:
    """``model`` is provider-qualified ("groq/llama-3.1-70b"): the one that answered."""
    row = UsageRecord(
        organization_id=job.organization_id,
        user_id=job.created_by_id,
        project_id=job.project_id,
        agent_id=job.agent_id,
        job_id=job.id,
        phase_id=step.phase_id,
        step_id=step.id,
        # The unique key makes a second write of the same call fail instead of charging twice.
        call_key=call_key,
        provider=provider,
        model=model,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
        cost=cost,
    )
    session.add(row)
    session.flush()
    return row
