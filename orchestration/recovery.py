"""The stale-job reaper (Celery beat): nothing is lost when a worker or a message is.

Postgres holds the truth; any message can be lost (the broker restarted empty, a publish
failed after the commit, a worker was killed, a join's or finish's message never came).
So the reaper does not guess which: a ``queued`` or ``running`` job with no event for
``stall_seconds`` and no step whose lease is still running is sent again from its first
unfinished phase. Re-sending is safe: a finished step returns at once, a claim is a
compare-and-set, and a step's lease is its hard time limit, so a live step is never
taken over.

Clock order (DESIGN.md): step hard time limit (the lease) < Redis visibility timeout <
``stall_seconds``; the reaper runs every ``reaper_interval_seconds``, well below it. The
longest a job goes without progress is ``stall_seconds`` plus one reaper interval.
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
    session: Session, *, stall_seconds: float, only: uuid.UUID | None = None
) -> list[uuid.UUID]:
    now = utcnow()
    live_step = (
        sa.select(JobStep.id)
        .where(
            JobStep.job_id == Job.id,
            JobStep.status == StepStatus.RUNNING.value,
            JobStep.lease_expires_at > now,
        )
        .exists()
    )
    stmt = sa.select(Job.id).where(
        Job.status.in_([JobStatus.QUEUED.value, JobStatus.RUNNING.value]),
        Job.updated_at < now - timedelta(seconds=stall_seconds),
        ~live_step,
    )
    if only is not None:
        stmt = stmt.where(Job.id == only)
    return list(session.scalars(stmt))


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


def requeue_stale_jobs(sessions: sessionmaker[Session], *, stall_seconds: float) -> int:
    with transaction(sessions) as session:
        job_ids = stale_job_ids(session, stall_seconds=stall_seconds)
    for job_id in job_ids:
        with transaction(sessions) as session:
            # Locked and checked again: a worker may have moved it on meanwhile.
            job = session.get(Job, job_id, with_for_update=True)
            if job is None or not stale_job_ids(session, stall_seconds=stall_seconds, only=job_id):
                continue
            phases, steps = unfinished_plan(session, job_id)
            # The event touches the job: the next sweep waits a full period before
            # trying again.
            append_event(
                session,
                job_id=job_id,
                type="job.requeued",
                data={"phases": [p.name for p in phases], "stalled_seconds": stall_seconds},
            )
        log.warning(
            "re-sending stalled job %s from phase %s", job_id, phases[0].name if phases else "-"
        )
        try:
            canvas.enqueue(job, phases, steps)
        except Exception:  # the broker is down: the next sweep tries again
            log.exception("could not re-send stalled job %s", job_id)
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
