"""How long a run's phases are expected to take (seed 003's ``estimated_duration`` per
phase and ``estimated_completion``): the organization's average for a phase of that name
over its completed runs of the last 30 days, else its average for any phase, else
``DEFAULT_PHASE_MS``. Phases run one after another, so the run ends after their sum."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobKind, JobPhase, utcnow
from orchestration import jobs
from orchestration.principal import Principal

DEFAULT_PHASE_MS = 60_000
WINDOW = timedelta(days=30)


@dataclass
class EstimatedRun:
    detail: jobs.JobDetail
    phase_ms: list[int]  # per phase, in order

    @property
    def completion(self) -> datetime:
        return self.detail.job.created_at + timedelta(milliseconds=sum(self.phase_ms))


def phase_estimates(session: Session, *, principal: Principal, names: list[str]) -> list[int]:
    """Milliseconds each phase (by name) is expected to take."""
    completed = [
        Job.organization_id == principal.organization_id,
        Job.kind == JobKind.ORCHESTRATION.value,
        JobPhase.status == "completed",
        JobPhase.execution_time_ms.is_not(None),
        JobPhase.completed_at >= utcnow() - WINDOW,
    ]
    average = sa.func.avg(JobPhase.execution_time_ms)
    joined = sa.select(JobPhase.name, average).join(Job, Job.id == JobPhase.job_id)
    by_name = dict(
        session.execute(
            joined.where(*completed, JobPhase.name.in_(set(names))).group_by(JobPhase.name)
        ).all()
    )
    overall = session.scalar(
        sa.select(average).join(Job, Job.id == JobPhase.job_id).where(*completed)
    )
    fallback = round(float(overall)) if overall is not None else DEFAULT_PHASE_MS
    return [round(float(by_name[n])) if by_name.get(n) is not None else fallback for n in names]


def submit_estimated(
    sessions: sessionmaker[Session], *, principal: Principal, submission: jobs.JobSubmission
) -> EstimatedRun:
    """Submit the run (``jobs.submit_job``: one transaction, one send), then estimate it."""
    detail = jobs.submit_job(sessions, principal=principal, submission=submission)
    with sessions() as session:
        estimates = phase_estimates(
            session, principal=principal, names=[phase.name for phase in detail.phases]
        )
    return EstimatedRun(detail, estimates)
