"""Claiming a step: a compare-and-set on its row, then everything the call needs
(job, phase, earlier phases' outputs, agent, organization, provider keys)."""

from __future__ import annotations

import logging
import os
import uuid
from datetime import timedelta

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.orm.attributes import set_committed_value

from baton.settings import get_settings
from models import (
    Agent,
    Job,
    JobPhase,
    JobStatus,
    JobStep,
    Organization,
    StepStatus,
    utcnow,
)
from models.db import transaction
from orchestration import integrations
from orchestration.state import (
    append_event,
    set_phase_status,
    transition_job,
)
from workers.engine.completion import fail_in
from workers.engine.core import WORKER_ID_HOST, Outcome, StepContext, worker_id

log = logging.getLogger(__name__)


def _claimer_is_dead(claimed_by: str | None) -> bool:
    """True when the claiming process ran on this host and no longer exists (a killed
    prefork child whose message Celery re-queued)."""
    if not claimed_by or ":" not in claimed_by:
        return False
    host, _, pid = claimed_by.rpartition(":")
    if host != WORKER_ID_HOST or not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def claim(
    sessions: sessionmaker[Session],
    *,
    job_id: uuid.UUID,
    step_id: uuid.UUID,
    take_over_from: str | None = None,
) -> StepContext | Outcome:
    with transaction(sessions) as session:
        step = session.get(JobStep, step_id)
        job = session.get(Job, job_id)
        if step is None or job is None or step.job_id != job.id:
            log.warning("step %s of job %s not found; dropping the message", step_id, job_id)
            return Outcome.STOP
        if step.status == StepStatus.COMPLETED.value:
            return Outcome.CONTINUE  # a redelivered message: no second call, no second charge
        if step.status != StepStatus.PENDING.value and step.status != StepStatus.RUNNING.value:
            return Outcome.STOP
        if job.status == JobStatus.QUEUED.value:
            transition_job(session, job_id=job.id, to=JobStatus.RUNNING)
            session.refresh(job)
        if job.status != JobStatus.RUNNING.value:
            return Outcome.STOP
        now = utcnow()
        settings = get_settings()
        lease = now + timedelta(seconds=settings.step_time_limit)
        # A redelivery alone does not take a running step over: the first delivery may be
        # alive (a reaper re-send, a broker restore). Its claimer must be gone, its lease
        # over, or it is this very delivery, retried after a database outage.
        own_retry = take_over_from is not None and step.claimed_by == take_over_from
        take_over = own_retry or _claimer_is_dead(step.claimed_by)
        if (
            step.status == StepStatus.RUNNING.value
            and step.attempts >= settings.step_max_deliveries
            and not own_retry  # an outage retried it: its worker did not die
            and (take_over or (step.lease_expires_at is not None and step.lease_expires_at < now))
        ):
            fail_in(
                session,
                StepContext(job=job, step=step, phase=session.get(JobPhase, step.phase_id),
                            attempt=step.attempts, agent=None, organization=None, previous=[],
                            siblings=[]),
                f"STEP_ABANDONED: started {step.attempts} times without finishing "
                "(its worker died or hit the step's hard time limit each time)",
            )  # fmt: skip
            return Outcome.FAILED
        may_take_over = sa.or_(
            JobStep.status == StepStatus.PENDING.value,
            sa.and_(
                JobStep.status == StepStatus.RUNNING.value,
                sa.or_(sa.true() if take_over else sa.false(), JobStep.lease_expires_at < now),
            ),
        )
        claimed = session.execute(
            sa.update(JobStep)
            .where(JobStep.id == step.id, may_take_over)
            .values(
                status=StepStatus.RUNNING.value,
                attempts=JobStep.attempts + 1,
                started_at=now,
                lease_expires_at=lease,
                claimed_by=worker_id(),
            )
            .execution_options(synchronize_session=False)
        ).rowcount
        if not claimed:
            return Outcome.STOP  # another delivery of this message is running it right now
        session.refresh(step)
        phase = session.get(JobPhase, step.phase_id)
        if set_phase_status(
            session,
            phase_id=phase.id,
            to=StepStatus.RUNNING,
            from_=[StepStatus.PENDING],
            started_at=now,
        ):
            # What the UPDATE wrote, without a flush: the completion times the phase from it.
            set_committed_value(phase, "status", StepStatus.RUNNING.value)
            set_committed_value(phase, "started_at", now)
            append_event(
                session,
                job_id=job.id,
                type="phase.started",
                data={"phase": phase.name, "code": phase.code},
            )
        append_event(
            session,
            job_id=job.id,
            type="step.started",
            data={
                "phase": phase.name,
                "step": step.name,
                "attempt": step.attempts,
                "worker": step.claimed_by,
            },
        )
        previous = [
            (p.name, p.output or "")
            for p in session.scalars(
                sa.select(JobPhase)
                .where(JobPhase.job_id == job.id, JobPhase.position < phase.position)
                .order_by(JobPhase.position)
            )
        ]
        siblings = []
        providers = None
        if step.spec.get("kind") == "score":
            siblings = list(session.scalars(sa.select(JobStep).where(JobStep.job_id == job.id)))
        else:
            providers = integrations.provider_context(session, organization_id=job.organization_id)
        return StepContext(
            job=job,
            step=step,
            phase=phase,
            attempt=step.attempts,
            agent=session.get(Agent, job.agent_id) if job.agent_id else None,
            organization=session.get(Organization, job.organization_id),
            previous=previous,
            siblings=siblings,
            providers=providers,
        )
