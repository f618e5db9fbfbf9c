"""Thin, named Celery tasks: ids in, engine call, done. Names come from TaskName.

Each task ends in the state an operator should see in Flower and Celery's events: a step
that failed its job is a FAILURE, one that stopped because its job did (cancelled, failed
elsewhere, paused) is REVOKED; neither stays STARTED. A database outage that outlasts the
engine's own retries retries the task, which is idempotent.
"""

from __future__ import annotations

import logging
import uuid

from celery import Task, signals
from celery.exceptions import Ignore

from baton.celery_app import app
from baton.settings import get_settings
from models.db import session_factory
from orchestration import accounts, idempotency, live, recovery
from orchestration.task_names import TaskName
from workers import engine, external

log = logging.getLogger(__name__)


@signals.worker_process_shutdown.connect
def _flush_live_output(**_: object) -> None:
    """A prefork child exits without atexit: the live messages its sender thread still
    holds (a claim's, sent in the background) go out first."""
    live.flush()


class StepFailed(Exception):
    """The step's own error failed its job (the job row and its history say which)."""


def _retry_after_outage(task: Task, exc: Exception, **kwargs: str) -> Exception:
    settings = get_settings()
    retries = task.request.retries
    log.warning("database unavailable in %s; retrying the task: %s", task.name, exc)
    return task.retry(
        exc=exc,
        countdown=min(1 + retries, 5),
        max_retries=int(settings.db_retry_seconds // 3) + 1,
        kwargs={**task.request.kwargs, **kwargs},
    )


def _end(task: Task, outcome: engine.Outcome, what: str) -> str:
    if outcome is engine.Outcome.CONTINUE:
        return outcome.value
    if outcome is engine.Outcome.FAILED:
        raise StepFailed(f"{what} failed its job; see the job's history")
    # Stopped because the job is not running: recorded as revoked (REVOKED in the result
    # backend, a task-revoked event), which also closes a chord's count or chord_unlock,
    # then ended without a success that would run the rest of the chain.
    request = task.request
    task.backend.mark_as_revoked(request.id, "the job is not running", request=request)
    task.send_event("task-revoked", terminated=False, signum=None, expired=False)
    raise Ignore()


# No task stores its success in the result backend (nothing reads it: the job's state is
# in PostgreSQL) except a chord's header steps, whose results the chord counts: their
# signatures ask for it (orchestration/canvas.py). Failures are stored (operators look).
_NO_RESULT = {"ignore_result": True, "store_errors_even_if_ignored": True}


# Step time limits are celeryconfig's task_time_limit/task_soft_time_limit (from settings).
@app.task(name=TaskName.RUN_STEP, bind=True, acks_late=True, **_NO_RESULT)
def run_step(
    self: Task,
    job_id: str,
    step_id: str,
    take_over_from: str | None = None,
    polling: bool = False,
    starts_job: bool = False,
) -> str:
    """``polling``: the step was submitted to an external task server and this delivery
    is its next poll (a retry with a countdown: no worker sleeps). ``starts_job``: a step
    of the chain's first link, whose job may still be queued (orchestration/canvas.py)."""
    try:
        if polling:
            outcome = external.poll(
                session_factory(), job_id=uuid.UUID(job_id), step_id=uuid.UUID(step_id)
            )
        else:
            outcome = engine.run_step(
                session_factory(),
                job_id=uuid.UUID(job_id),
                step_id=uuid.UUID(step_id),
                take_over_from=take_over_from,
                starts_job=starts_job,
            )
    except external.PollLater as later:
        # The worker is free until the countdown; the chain waits on this task id.
        raise self.retry(
            countdown=later.countdown,
            max_retries=None,
            kwargs={**self.request.kwargs, "polling": True},
        ) from None
    except engine.DB_UNAVAILABLE as exc:
        # Not dropped: sent again, and it may take over the claim this delivery made.
        raise _retry_after_outage(self, exc, take_over_from=engine.worker_id()) from exc
    return _end(self, outcome, f"step {step_id} of job {job_id}")


@app.task(
    name=TaskName.JOIN_PHASE, bind=True, acks_late=True, soft_time_limit=60, time_limit=90,
    **_NO_RESULT,
)  # fmt: skip
def join_phase(self: Task, job_id: str, phase_id: str) -> str:
    try:
        outcome = engine.join_phase(
            session_factory(), job_id=uuid.UUID(job_id), phase_id=uuid.UUID(phase_id)
        )
    except engine.DB_UNAVAILABLE as exc:
        raise _retry_after_outage(self, exc) from exc
    return _end(self, outcome, f"phase {phase_id} of job {job_id}")


@app.task(
    name=TaskName.FINISH_JOB, bind=True, acks_late=True, soft_time_limit=60, time_limit=90,
    **_NO_RESULT,
)  # fmt: skip
def finish_job(self: Task, job_id: str) -> str:
    try:
        outcome = engine.finish_job(session_factory(), job_id=uuid.UUID(job_id))
    except engine.DB_UNAVAILABLE as exc:
        raise _retry_after_outage(self, exc) from exc
    return _end(self, outcome, f"job {job_id}")


@app.task(name=TaskName.REAP_STALE_JOBS, soft_time_limit=120, time_limit=180, **_NO_RESULT)
def reap_stale_jobs() -> int:
    return recovery.requeue_stale_jobs(
        session_factory(), stall_seconds=get_settings().stall_seconds
    )


@app.task(name=TaskName.SWEEP_RESERVATIONS, soft_time_limit=120, time_limit=180, **_NO_RESULT)
def sweep_reservations() -> int:
    return recovery.release_expired_reservations(session_factory())


@app.task(name=TaskName.PURGE_EXPIRED, soft_time_limit=120, time_limit=180, **_NO_RESULT)
def purge_expired() -> int:
    """Expired Idempotency-Keys and logged-out access tokens that have expired anyway."""
    sessions = session_factory()
    return idempotency.purge_expired(sessions) + accounts.purge_revoked_access_tokens(sessions)


@app.task(name=TaskName.FAIL_JOB, acks_late=True, soft_time_limit=60, time_limit=90, **_NO_RESULT)
def fail_job(job_id: str) -> None:
    """No longer linked by the canvas (a delivery glitch must not fail finished work);
    kept so messages sent by an earlier version still find a task."""
    engine.fail_job(
        session_factory(),
        job_id=uuid.UUID(job_id),
        reason="a worker task crashed; see the worker log",
    )


@app.task(
    name=TaskName.CANCEL_EXTERNAL, acks_late=True, soft_time_limit=60, time_limit=90, **_NO_RESULT
)
def cancel_external(job_id: str, step_id: str) -> None:
    external.cancel(session_factory(), job_id=uuid.UUID(job_id), step_id=uuid.UUID(step_id))
