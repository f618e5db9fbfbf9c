"""The usage ledger: one row per provider call, written in the step's own transaction."""

from __future__ import annotations

from sqlalchemy.orm import Session

from models import Job, JobStep, UsageRecord
from workers.providers import CompletionResult


def record_usage(
    session: Session, *, job: Job, step: JobStep, result: CompletionResult, attempt: int
) -> UsageRecord:
    provider, _, model = result.model.partition("/")
    row = UsageRecord(
        organization_id=job.organization_id,
        user_id=job.created_by_id,
        project_id=job.project_id,
        agent_id=job.agent_id,
        job_id=job.id,
        phase_id=step.phase_id,
        step_id=step.id,
        # The unique key makes a second write of the same call fail instead of charging twice.
        call_key=f"{step.id}:{attempt}",
        provider=result.provider or provider,
        model=result.model,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=result.completion_tokens,
        cost=result.cost,
    )
    session.add(row)
    session.flush()
    return row
