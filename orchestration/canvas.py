"""Plan rows -> one Celery canvas, built by task *name* (orchestration never imports workers).

A job is ``chain(phase_1, phase_2, ...)``: a one-step phase is the step's task, a
many-step phase is ``chord(steps, join)``. The transaction that completes the last phase
(its step's, or its join's) also ends the job: no task of its own, so a job takes as many
task hops as it has phases. Only a job with no phase left to run (re-sent, resumed) is
sent ``finish`` alone. Every signature is immutable and carries ids
only; step task ids are assigned up front and stored, so cancel can revoke them.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from celery import chain, chord
from celery.canvas import Signature
from celery.utils import uuid as celery_uuid

from baton.celery_app import app
from baton.settings import get_settings
from models import Job, JobPhase, JobStep, Priority
from orchestration.task_names import TaskName

# Broker priority within a queue (Redis: 0 is highest); queues let operators dedicate workers.
BROKER_PRIORITY = {Priority.URGENT: 0, Priority.HIGH: 3, Priority.MEDIUM: 5, Priority.LOW: 8}


ORGANIZATION_HEADER = "baton_organization_id"


def queue_for(priority: str) -> str:
    return f"{get_settings().task_queue_prefix}.{Priority(priority).value}"


def maintenance_queue() -> str:
    """Beat's periodic tasks (reaper, hold sweep): every worker consumes it (all_queues)."""
    return f"{get_settings().task_queue_prefix}.maintenance"


def webhooks_queue() -> str:
    """Webhook deliveries: a slow receiver never holds up job steps."""
    return f"{get_settings().task_queue_prefix}.webhooks"


def all_queues() -> list[str]:
    """Most urgent first: the order a worker started with ``-Q`` lists them. Then
    maintenance (every worker started by ``baton worker``/``baton up`` runs beat's
    tasks) and webhook deliveries (their own queue, consumed last)."""
    return [
        *(queue_for(p) for p in (Priority.URGENT, Priority.HIGH, Priority.MEDIUM, Priority.LOW)),
        maintenance_queue(),
        webhooks_queue(),
    ]


@dataclass(frozen=True, slots=True)
class _JobRef:
    """What every signature of one job repeats, read from the job's row once: a mapped
    attribute is a descriptor call and a UUID's text a conversion, a dozen a signature."""

    id: str
    kind: str
    queue: str
    priority: int
    organization_id: str


def _job_ref(job: Job) -> _JobRef:
    return _JobRef(
        id=str(job.id),
        kind=job.kind,
        queue=job.queue or queue_for(job.priority),
        priority=BROKER_PRIORITY[Priority(job.priority)],
        organization_id=str(job.organization_id),
    )


def _sig(
    name: TaskName,
    *args: str,
    job: _JobRef,
    task_id: str | None = None,
    phase: str | None = None,
    step: str | None = None,
    keep_result: bool = False,
    kwargs: dict[str, object] | None = None,
) -> Signature:
    # Flower and the worker log show ``shadow`` as the task's name and ``argsrepr`` as its
    # arguments: the job's kind, id, phase and step instead of two bare UUIDs.
    where = "/".join(part for part in (job.kind, phase, step) if part)
    named = [f"job={job.id}", f"kind={job.kind}"]
    named += [f"{key}={value!r}" for key, value in (("phase", phase), ("step", step)) if value]
    options: dict[str, object] = {
        "queue": job.queue,
        "priority": job.priority,
        "shadow": f"{name}[{where}]",
        "argsrepr": f"({', '.join(named)})",
        # Given, as argsrepr is: Celery would build it with saferepr, a general and slow
        # repr (its share of a submission's CPU was larger than the message's JSON).
        "kwargsrepr": repr(kwargs or {}),
        # For the worker's log lines (workers/observability.py), not for any decision.
        "headers": {ORGANIZATION_HEADER: job.organization_id},
    }
    if task_id:
        options["task_id"] = task_id
    # A chord's header keeps its result (the chord counts it). Every other task ignores its
    # result, and saying so in the signature also spares the sender (the API, which has no
    # task registered) the result backend's subscription to the task's result channel:
    # nothing here ever waits for a result, the job's state is in PostgreSQL.
    options["ignore_result"] = not keep_result
    return app.signature(str(name), args=args, kwargs=kwargs, immutable=True, **options)


def _parts(job: Job, phases: list[JobPhase], steps: list[JobStep]) -> list[Signature]:
    """The chain's links in order: a step's signature, or a chord for a many-step phase.
    The first link's steps say ``starts_job``: the job may still be queued, so their claim
    tries ``queued -> running`` first rather than after a claim that finds it queued."""
    ref = _job_ref(job)
    by_phase: dict[uuid.UUID, list[JobStep]] = {}
    for step in sorted(steps, key=lambda s: s.position):
        by_phase.setdefault(step.phase_id, []).append(step)
    parts: list[Signature] = []
    for phase in sorted(phases, key=lambda p: p.position):
        phase_steps = by_phase[phase.id]
        step_sigs = [
            _sig(
                TaskName.RUN_STEP,
                ref.id,
                str(s.id),
                job=ref,
                task_id=s.celery_task_id,
                phase=phase.name,
                step=s.name,
                keep_result=len(phase_steps) > 1,
                kwargs=None if parts else {"starts_job": True},
            )
            for s in phase_steps
        ]
        if len(step_sigs) == 1:
            parts.append(step_sigs[0])
        else:
            join = _sig(TaskName.JOIN_PHASE, ref.id, str(phase.id), job=ref, phase=phase.name)
            parts.append(chord(step_sigs, join))
    if not parts:  # every phase completed (a re-sent or resumed job): only the end
        parts.append(_sig(TaskName.FINISH_JOB, ref.id, job=ref))
    return parts


def bound_broker_waits() -> None:
    """A process that answers clients (the API) gives up on a broker that does not answer
    (down, paused) after about BATON_BROKER_TIMEOUT_SECONDS per attempt. Call it before the
    first send: the producer pool is built then. Workers keep the transport's defaults (a
    worker's sends are retried by Celery; a consumer must not time out an idle socket)."""
    settings = get_settings()
    if settings.broker_is_filesystem:
        return
    seconds = settings.broker_timeout_seconds
    if settings.celery_broker_url.startswith(("redis://", "rediss://")):
        from orchestration.redis_transport import TRANSPORT

        app.conf.broker_transport = TRANSPORT  # one Redis client per channel, not per send
    app.conf.broker_transport_options = {
        **(app.conf.broker_transport_options or {}),
        "socket_timeout": seconds,
        "socket_connect_timeout": seconds,
    }


# A request waits on the broker for a bounded time (two socket timeouts at most), then
# answers 503; Celery's default policy would retry for seconds more.
_SEND_RETRY: dict[str, object] = {
    "retry": True,
    "retry_policy": {"max_retries": 1, "interval_start": 0, "interval_step": 0.5},
}


def enqueue(job: Job, phases: list[JobPhase], steps: list[JobStep]) -> None:
    """Send the whole job once (one message for the first task; the rest ride along).

    No ``link_error``: only a step's own error fails a job, and the step records it
    itself. A message that cannot be published or is lost (a join, a finish) leaves the
    job running with no progress, and beat's reaper re-sends it (orchestration/recovery).
    """
    parts = _parts(job, phases, steps)
    if any(isinstance(part, chord) for part in parts):
        chain(*parts).apply_async(**_SEND_RETRY)
    else:
        send_chain(parts)


def send_chain(parts: list[Signature]) -> None:
    """Send ``chain(*parts)`` of plain signatures as ``chain.apply_async()`` does, without
    its cost: it clones and freezes every link (``prepare_steps``), a fifth of Celery's
    part of a submission. The message is the same (tests/test_jobs_api.py compares them):
    the first task, its body carrying the other links frozen (a task id, ``reply_to``),
    last first, as protocol 2's ``chain`` field, which the worker pops after each task.
    """
    reply_to = app.thread_oid
    for part in parts:
        part.options.setdefault("task_id", celery_uuid())
        part.options.setdefault("reply_to", reply_to)
    first = parts[0]
    app.send_task(
        first.task,
        args=first.args,
        kwargs=first.kwargs,
        chain=parts[:0:-1],
        **_SEND_RETRY,
        **first.options,
    )


def revoke(task_ids: list[str]) -> None:
    """A shortcut only: the job row's status is what stops work."""
    if task_ids:
        app.control.revoke(task_ids)


def cancel_external(job: Job, step_ids: list[uuid.UUID]) -> None:
    """Ask the workers to tell the task servers of these steps that the job is cancelled."""
    ref = _job_ref(job)
    for step_id in step_ids:
        _sig(TaskName.CANCEL_EXTERNAL, ref.id, str(step_id), job=ref).apply_async()
