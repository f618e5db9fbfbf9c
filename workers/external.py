"""The ``external`` step executor: seed 000's Task Master, any server that speaks the REST
contract in docs/task-servers.md (submit, poll, fetch, optional cancel).

A step of an agent with ``executor: external`` reserves a hold (BATON_EXTERNAL_HOLD),
submits the step to the organization's task server, records the remote id on the step
and returns its worker at once (``PollLater``): the Celery task retries itself with a
countdown that doubles up to BATON_EXTERNAL_POLL_MAX_SECONDS, so no worker ever sleeps on
a remote task. Each poll extends the step's lease (the reaper leaves it alone) and reads
the remote status: done, it fetches the result and completes the step like any answer
(ledger row at the cost the server reports, hold settled); failed, past its deadline (the
agent's ``timeout_seconds``, at most BATON_EXTERNAL_TIMEOUT_SECONDS) or erroring three
polls in a row, the step fails with the hold released. A cancelled job's task is
cancelled at the server when the server offers cancel.
"""

from __future__ import annotations

import json
import logging
import time
import uuid
from datetime import timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import (
    Agent,
    Integration,
    Job,
    JobPhase,
    JobStatus,
    JobStep,
    Organization,
    StepStatus,
    utcnow,
)
from models.db import transaction
from orchestration import budget, egress, integrations, secrets
from orchestration.errors import DomainError
from orchestration.state import append_event
from workers import engine
from workers.providers import CompletionResult, ProviderError

log = logging.getLogger(__name__)

MAX_POLL_ERRORS = 3  # consecutive failed polls before the step fails
RUNNING_STATES = {"queued", "pending", "running", "in_progress"}
DONE, FAILED_STATES = "completed", {"failed", "error", "cancelled"}
CANCEL_NOT_OFFERED = {404, 405, 501}


class PollLater(Exception):  # noqa: N818 - a signal to the task, not an error
    """The remote task is not done: poll again in ``countdown`` seconds."""

    def __init__(self, countdown: float) -> None:
        super().__init__(f"poll again in {countdown:.1f} s")
        self.countdown = countdown


class ExternalError(ProviderError):
    """A task server refused, failed, or did not finish: the step fails with this."""


def is_external(agent: Agent | None) -> bool:
    return bool(agent and (agent.config or {}).get("executor") == "external")


# -- the one door for outbound calls --------------------------------------------------------


def _request(
    server: Integration,
    method: str,
    path: str,
    *,
    json: Any = None,
    key: str | None = None,
    idempotency_key: str | None = None,
) -> httpx.Response:
    """Every request to a task server. The organization-configured URL follows the
    egress rules (checked here for a clear error, then pinned to the checked address by
    the client); no redirects."""
    url = f"{(server.base_url or '').rstrip('/')}{path}"
    try:
        integrations.validate_base_url(url)
    except DomainError as exc:
        raise ExternalError("external_refused", f"{server.name}: {exc.message}") from None
    headers = {"Accept": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    if idempotency_key:
        headers["Idempotency-Key"] = idempotency_key
    timeout = float(server.timeout_seconds or get_settings().external_request_seconds)
    with egress.pinned_client(timeout=timeout) as client:
        return client.request(method, url, json=json, headers=headers)


def _key(server: Integration) -> str | None:
    if not server.encrypted_api_key:
        return None
    try:
        return secrets.decrypt(server.encrypted_api_key)
    except secrets.SecretUnreadable as exc:
        raise ExternalError("external_key_unreadable", f"{server.name}: {exc}") from None


def _body(response: httpx.Response, server: Integration) -> dict[str, Any]:
    try:
        data = response.json()
    except ValueError:
        data = None
    if not isinstance(data, dict):
        raise ExternalError(
            "external_malformed", f"{server.name}: the answer to {response.request.url.path} "
            "is not a JSON object",
        )  # fmt: skip
    return data


def _countdown(polls: int) -> float:
    settings = get_settings()
    return min(settings.external_poll_seconds * 2**polls, settings.external_poll_max_seconds)


def _timeout_seconds(agent: Agent | None) -> float:
    configured = (agent.config or {}).get("timeout_seconds") if agent else None
    limit = get_settings().external_timeout_seconds
    return min(float(configured), limit) if configured else limit


# -- submit (the step's first delivery) -----------------------------------------------------


def run(sessions: sessionmaker[Session], ctx: engine.StepContext) -> engine.Outcome:
    """Called by the engine for a claimed step of an external agent: submit it, or, when
    it was submitted by an earlier delivery (a re-sent step), go on polling it."""
    if (ctx.step.external or {}).get("task_id"):
        return poll(sessions, job_id=ctx.job.id, step_id=ctx.step.id)
    name = (ctx.agent.config or {}).get("task_server", "") if ctx.agent else ""
    hold_key = ctx.call_key(1)
    with transaction(sessions) as session:
        server = integrations.task_server(
            session, organization_id=ctx.job.organization_id, name=name
        )
        if server is None:
            raise ExternalError("external_missing", f"no task server integration named '{name}'")
        budget.reserve(
            session, scope=budget.CallScope.of(ctx.job), call_key=hold_key,
            amount=get_settings().external_hold, job_id=ctx.job.id,
            hold_seconds=int(_timeout_seconds(ctx.agent)) + get_settings().step_time_limit,
        )  # fmt: skip
    payload = {
        "description": ctx.step.spec.get("instruction", ""),
        "input": ctx.job.input or {},
        "parameters": {"task_type": ctx.step.spec.get("task_type", "general")},
        "metadata": {
            "baton_job_id": str(ctx.job.id),
            "baton_step_id": str(ctx.step.id),
            "organization_id": str(ctx.job.organization_id),
        },
    }
    try:
        response = _request(
            server, "POST", "/tasks", json=payload, key=_key(server),
            idempotency_key=str(ctx.step.id),
        )  # fmt: skip
        if response.status_code >= 400:
            raise ExternalError(
                "external_rejected" if response.status_code < 500 else "external_server_error",
                f"{server.name}: submit answered HTTP {response.status_code}",
                http_status=response.status_code,
            )
        task_id = str(_body(response, server).get("id") or "")
        if not task_id:
            raise ExternalError("external_malformed", f"{server.name}: submit returned no id")
    except (httpx.HTTPError, ExternalError) as exc:
        with transaction(sessions) as session:
            budget.release(session, call_key=hold_key)
        if isinstance(exc, ExternalError):
            raise
        raise ExternalError(
            "external_unreachable", f"{server.name}: submit failed ({type(exc).__name__})"
        ) from None
    state = {
        "task_server": server.name, "task_id": task_id, "attempt": ctx.attempt,
        "hold_key": hold_key, "polls": 0, "errors": 0, "status": "submitted",
        "deadline": time.time() + _timeout_seconds(ctx.agent),
    }  # fmt: skip
    countdown = _countdown(0)
    with transaction(sessions) as session:
        session.execute(
            sa.update(JobStep).where(JobStep.id == ctx.step.id)
            .values(external=state, lease_expires_at=_lease(countdown))
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        append_event(
            session, job_id=ctx.job.id, type="external.submitted",
            data={"phase": ctx.phase.name, "step": ctx.step.name,
                  "task_server": server.name, "task_id": task_id},
        )  # fmt: skip
    raise PollLater(countdown)


def _lease(countdown: float):  # type: ignore[no-untyped-def]
    return utcnow() + timedelta(seconds=countdown + get_settings().step_time_limit)


# -- poll (every retry of the step's task) --------------------------------------------------


def _context(
    session: Session, job: Job, step: JobStep, state: dict[str, Any]
) -> engine.StepContext:
    return engine.StepContext(
        job=job, step=step, phase=session.get(JobPhase, step.phase_id),
        attempt=int(state.get("attempt", step.attempts)),
        agent=session.get(Agent, job.agent_id) if job.agent_id else None,
        organization=session.get(Organization, job.organization_id),
        previous=[], siblings=[],
    )  # fmt: skip


def poll(
    sessions: sessionmaker[Session], *, job_id: uuid.UUID, step_id: uuid.UUID
) -> engine.Outcome:
    with transaction(sessions) as session:
        step, job = session.get(JobStep, step_id), session.get(Job, job_id)
        if step is None or job is None:
            return engine.Outcome.STOP
        if step.status == StepStatus.COMPLETED.value:
            return engine.Outcome.CONTINUE
        state = dict(step.external or {})
        if not state.get("task_id"):
            return engine.Outcome.STOP
        unwanted = job.status in (JobStatus.CANCELLED.value, JobStatus.FAILED.value)
        # A step ended by its job's cancel or failure still tells its server (below).
        if step.status != StepStatus.RUNNING.value and not unwanted:
            return engine.Outcome.STOP
        ctx = _context(session, job, step, state)
        server = integrations.task_server(
            session, organization_id=job.organization_id, name=state["task_server"]
        )
    if unwanted:
        # The remote work is not wanted any more (cancel's own task may have done this).
        cancel(sessions, job_id=job_id, step_id=step_id)
        return engine.Outcome.STOP
    # A paused job keeps its remote task: a finished, paid-for step is kept (engine).
    if server is None:
        return _failed(sessions, ctx, state, f"external_missing: the task server "
                       f"'{state['task_server']}' no longer exists")  # fmt: skip
    try:
        response = _request(server, "GET", f"/tasks/{state['task_id']}", key=_key(server))
        if response.status_code >= 400:
            raise ExternalError(
                "external_server_error", f"{server.name}: status answered HTTP {response.status_code}",
                http_status=response.status_code,
            )  # fmt: skip
        remote = _body(response, server)
    except (httpx.HTTPError, ExternalError) as exc:
        state["errors"] = int(state.get("errors", 0)) + 1
        why = exc.message if isinstance(exc, ExternalError) else f"{type(exc).__name__}"
        if state["errors"] >= MAX_POLL_ERRORS:
            return _failed(sessions, ctx, state, f"external_server_error: {MAX_POLL_ERRORS} polls "
                           f"in a row failed, the last: {why}")  # fmt: skip
        return _again(sessions, ctx, state)
    state["errors"] = 0
    status = str(remote.get("status", "")).lower()
    if status != state.get("status"):
        with transaction(sessions) as session:
            append_event(
                session, job_id=job_id, type="external.status",
                data={"phase": ctx.phase.name, "step": ctx.step.name, "task_id": state["task_id"],
                      "status": status, "progress": remote.get("progress")},
            )  # fmt: skip
        state["status"] = status
    if status == DONE:
        return _fetch(sessions, ctx, state, server)
    if status in FAILED_STATES:
        error = str(remote.get("error") or f"the task is {status}")[:1000]
        return _failed(sessions, ctx, state, f"external_failed: {server.name}: {error}")
    if time.time() > float(state["deadline"]):
        cancel(sessions, job_id=job_id, step_id=step_id, release_hold=False)
        return _failed(sessions, ctx, state, f"external_timeout: {server.name} did not finish the "
                       f"task within {_timeout_seconds(ctx.agent):g} s")  # fmt: skip
    return _again(sessions, ctx, state)


def _again(
    sessions: sessionmaker[Session], ctx: engine.StepContext, state: dict[str, Any]
) -> engine.Outcome:
    state["polls"] = int(state.get("polls", 0)) + 1
    countdown = _countdown(state["polls"])
    with transaction(sessions) as session:
        session.execute(
            sa.update(JobStep)
            .where(JobStep.id == ctx.step.id, JobStep.status == StepStatus.RUNNING.value)
            .values(external=state, lease_expires_at=_lease(countdown))
            .execution_options(synchronize_session=False)
        )  # fmt: skip
    raise PollLater(countdown)


def _failed(
    sessions: sessionmaker[Session], ctx: engine.StepContext, state: dict[str, Any], error: str
) -> engine.Outcome:
    with transaction(sessions) as session:
        session.execute(
            sa.update(JobStep).where(JobStep.id == ctx.step.id).values(external=state)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        budget.release(session, call_key=state["hold_key"])
    return engine.fail_step(sessions, ctx, error)


def _fetch(
    sessions: sessionmaker[Session], ctx: engine.StepContext, state: dict[str, Any],
    server: Integration,
) -> engine.Outcome:  # fmt: skip
    try:
        response = _request(server, "GET", f"/tasks/{state['task_id']}/result", key=_key(server))
        if response.status_code >= 400:
            raise ExternalError(
                "external_server_error",
                f"{server.name}: result answered HTTP {response.status_code}",
            )
        body = _body(response, server)
    except (httpx.HTTPError, ExternalError) as exc:
        state["errors"] = int(state.get("errors", 0)) + 1
        if state["errors"] >= MAX_POLL_ERRORS:
            why = exc.message if isinstance(exc, ExternalError) else type(exc).__name__
            return _failed(sessions, ctx, state, f"external_server_error: {why}")
        return _again(sessions, ctx, state)
    output = body.get("output")
    if not isinstance(output, str):
        output = json.dumps(output)
    usage = body.get("usage") if isinstance(body.get("usage"), dict) else {}
    try:
        cost = max(Decimal(str(usage.get("cost", "0"))), Decimal(0))
    except InvalidOperation:
        cost = Decimal(0)
    prompt, completion = (int(usage.get(k) or 0) for k in ("prompt_tokens", "completion_tokens"))
    result = CompletionResult(
        text=output, provider=server.name[:60],
        model=str(body.get("model") or f"{server.name}/external")[:120],
        prompt_tokens=max(prompt, 0), completion_tokens=max(completion, 0), cost=cost,
        latency_ms=0, attempts=[], attempt_number=1, providers_tried=[server.name],
    )  # fmt: skip
    elapsed = (
        int((utcnow() - ctx.step.started_at).total_seconds() * 1000) if ctx.step.started_at else 0
    )
    return engine.complete_step(sessions, ctx, output=output, result=result, elapsed_ms=elapsed)


# -- cancel ---------------------------------------------------------------------------------


def cancel(
    sessions: sessionmaker[Session], *, job_id: uuid.UUID, step_id: uuid.UUID,
    release_hold: bool = True,
) -> bool | None:  # fmt: skip
    """Cancel the step's remote task when the server offers cancel; release the hold.
    True: cancelled there; False: the server does not offer cancel; None: nothing to do."""
    with transaction(sessions) as session:
        step = session.get(JobStep, step_id)
        state = dict((step.external if step else None) or {})
        if not state.get("task_id") or state.get("cancel_sent"):
            return None
        job = session.get(Job, job_id)
        server = integrations.task_server(
            session, organization_id=job.organization_id, name=state["task_server"]
        )
        state["cancel_sent"] = True
        session.execute(
            sa.update(JobStep).where(JobStep.id == step_id).values(external=state)
            .execution_options(synchronize_session=False)
        )  # fmt: skip
        if release_hold:
            budget.release(session, call_key=state["hold_key"])
    offered, http_status = False, None
    if server is not None:
        try:
            response = _request(
                server, "POST", f"/tasks/{state['task_id']}/cancel", key=_key(server)
            )
            http_status = response.status_code
            offered = response.status_code < 400
        except (httpx.HTTPError, ExternalError) as exc:
            log.warning("cancel of task %s at %s failed: %s", state["task_id"], server.name, exc)
    with transaction(sessions) as session:
        append_event(
            session, job_id=job_id, type="external.cancel",
            data={"task_server": state["task_server"], "task_id": state["task_id"],
                  "offered": offered, "http_status": http_status},
        )  # fmt: skip
    return offered if http_status not in CANCEL_NOT_OFFERED else False
