"""Thin, named Celery tasks: ids in, engine call, done. Names come from TaskName."""

from __future__ import annotations

import uuid
from datetime import timedelta

from celery import Task
from celery.exceptions import Ignore

from baton.celery_app import app
from baton.settings import get_settings
from models.db import session_factory
from orchestration import accounts, idempotency, recovery
from orchestration.task_names import TaskName
from workers import engine


def _continue_or_stop(outcome: engine.Outcome) -> str:
    if outcome is engine.Outcome.STOP:
        # Ends the chain here without failing it: the job row already says why.
        raise Ignore()
    return outcome.value


# Step time limits are celeryconfig's task_time_limit/task_soft_time_limit (from settings).
@app.task(name=TaskName.RUN_STEP, bind=True, acks_late=True)
def run_step(self: Task, job_id: str, step_id: str) -> str:
    redelivered = bool((self.request.delivery_info or {}).get("redelivered"))
    return _continue_or_stop(
        engine.run_step(
            session_factory(),
            job_id=uuid.UUID(job_id),
            step_id=uuid.UUID(step_id),
            redelivered=redelivered,
        )
    )


@app.task(name=TaskName.JOIN_PHASE, acks_late=True, soft_time_limit=60, time_limit=90)
def join_phase(job_id: str, phase_id: str) -> str:
    return _continue_or_stop(
        engine.join_phase(session_factory(), job_id=uuid.UUID(job_id), phase_id=uuid.UUID(phase_id))
    )


@app.task(name=TaskName.FINISH_JOB, acks_late=True, soft_time_limit=60, time_limit=90)
def finish_job(job_id: str) -> str:
    return _continue_or_stop(engine.finish_job(session_factory(), job_id=uuid.UUID(job_id)))


@app.task(name=TaskName.REAP_STALE_JOBS, soft_time_limit=120, time_limit=180)
def reap_stale_jobs() -> int:
    settings = get_settings()
    return recovery.requeue_stale_jobs(
        session_factory(),
        lease_grace=timedelta(seconds=settings.visibility_timeout),
        queued_age=timedelta(seconds=settings.stale_queued_seconds),
    )


@app.task(name=TaskName.SWEEP_RESERVATIONS, soft_time_limit=120, time_limit=180)
def sweep_reservations() -> int:
    return recovery.release_expired_reservations(session_factory())


@app.task(name=TaskName.PURGE_EXPIRED, soft_time_limit=120, time_limit=180)
def purge_expired() -> int:
    """Expired Idempotency-Keys and logged-out access tokens that have expired anyway."""
    sessions = session_factory()
    return idempotency.purge_expired(sessions) + accounts.purge_revoked_access_tokens(sessions)


@app.task(name=TaskName.FAIL_JOB, acks_late=True, soft_time_limit=60, time_limit=90)
def fail_job(job_id: str) -> None:
    engine.fail_job(
        session_factory(),
        job_id=uuid.UUID(job_id),
        reason="a worker task crashed; see the worker log",
    )
