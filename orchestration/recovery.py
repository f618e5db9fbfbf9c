"""The stale-job sweeper (Celery beat): nothing is lost when a worker or a message is.

A running job whose running step's lease has expired (its worker was killed past the
broker's redelivery), or a queued job that no worker has touched for ``queued_age``, is
sent again from its first unfinished phase. Re-sending is safe: a step that is already
done returns at once, and a claimed step is claimed by compare-and-set.
Clock order (DESIGN.md): step time limit < visibility timeout < sweeper age.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from models import Job, JobPhase, JobStatus, JobStep, StepStatus, utcnow
from models.db import transaction
from orchestration import budget, canvas
from orchestration.state import append_event

log = logging.getLogger(__name__)


def stale_job_ids(
    session: Session, *, lease_grace: timedelta, queued_age: timedelta
) -> list[uuid.UUID]:
    now = utcnow()
    expired_step = (
        sa.select(JobStep.job_id)
        .where(
            JobStep.status == StepStatus.RUNNING.value, JobStep.lease_expires_at < now - lease_grace
        )
        .scalar_subquery()
    )
    stuck_running = sa.select(Job.id).where(
        Job.status == JobStatus.RUNNING.value, Job.id.in_(expired_step)
    )
    forgotten_queued = sa.select(Job.id).where(
        Job.status == JobStatus.QUEUED.value, Job.updated_at < now - queued_age
    )
    return list(session.scalars(stuck_running.union(forgotten_queued)))


def unfinished_plan(session: Session, job_id: uuid.UUID) -> tuple[list[JobPhase], list[JobStep]]:
    """The phases (and their steps) a re-sent canvas must still run; finished steps in
    them return at once when their message arrives."""
    phases = list(
        session.scalars(
            sa.select(JobPhase).where(
                JobPhase.job_id == job_id, JobPhase.status != StepStatus.COMPLETED.value
            )
        )
    )
    steps = list(
        session.scalars(sa.select(JobStep).where(JobStep.phase_id.in_([p.id for p in phases])))
    )
    return phases, steps


def requeue_stale_jobs(
    sessions: sessionmaker[Session], *, lease_grace: timedelta, queued_age: timedelta
) -> int:
    with transaction(sessions) as session:
        job_ids = stale_job_ids(session, lease_grace=lease_grace, queued_age=queued_age)
    for job_id in job_ids:
        with transaction(sessions) as session:
            job = session.get(Job, job_id)
            phases, steps = unfinished_plan(session, job_id)
            # Touch the job so the next sweep waits a full period before trying again.
            job.updated_at = utcnow()
            append_event(
                session,
                job_id=job_id,
                type="job.requeued",
                data={"phases": [p.name for p in phases]},
            )
        log.warning(
            "re-enqueueing stale job %s from phase %s", job_id, phases[0].name if phases else "-"
        )
        canvas.enqueue(job, phases, steps)
    return len(job_ids)


def release_expired_reservations(
    sessions: sessionmaker[Session], *, now: datetime | None = None
) -> int:
    """Holds whose call never finished (worker killed between reserve and settle)."""
    with transaction(sessions) as session:
        keys = budget.expired_call_keys(session, now)
    for key in keys:
        with transaction(sessions) as session:
            budget.release(session, call_key=key)
    if keys:
        log.warning("released %d expired budget reservations", len(keys))
    return len(keys)
