"""Job schemas shared by every kind: settings, list filters, and the generic job view."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate
from webargs.fields import DelimitedList

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema
from models import JobKind, JobStatus, Priority
from models.jobs import StepStatus
from orchestration.jobs import JobDetail
from orchestration.model_catalog import SIM_MODELS

PRIORITIES = [p.value for p in Priority]
STATUSES = [s.value for s in JobStatus]
KINDS = [k.value for k in JobKind]
STEP_STATUSES = [s.value for s in StepStatus]


def _one_of(values: list[str], **kwargs: Any) -> fields.String:
    """An output string documented with its enum (the values the API ever sends)."""
    return fields.String(metadata={"enum": values}, **kwargs)


class JobSettingsSchema(Schema):
    """Per-job model settings (seed 003 ``settings``)."""

    ai_model = fields.String(validate=validate.Length(min=1, max=120))
    model = fields.String(validate=validate.Length(min=1, max=120))
    max_tokens = fields.Integer(validate=validate.Range(min=1, max=200_000))
    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    # Stream provider answers (partial output as step.progress events); else the agent's.
    stream = fields.Boolean()
    # Force a behaviour of the offline ``sim`` provider on its calls (tests, demos).
    sim_fault = fields.String(validate=validate.OneOf(SIM_MODELS))


class JobSubmitBaseSchema(Schema):
    priority = fields.String(
        load_default=Priority.MEDIUM.value, validate=validate.OneOf(PRIORITIES)
    )
    project_id = fields.UUID()
    agent_id = fields.UUID()
    settings = fields.Nested(JobSettingsSchema, load_default=dict)


def _csv(allowed: list[str]) -> fields.Field:
    """``?status=running,queued``: a comma-separated filter of known values."""
    return DelimitedList(fields.String(validate=validate.OneOf(allowed)))


class JobListArgsSchema(ListArgsSchema):
    status = _csv(STATUSES)
    priority = _csv(PRIORITIES)
    kind = fields.String(validate=validate.OneOf(KINDS))
    project_id = fields.UUID()
    agent_id = fields.UUID()


class TokenUsageSchema(Schema):
    prompt_tokens = fields.Integer()
    completion_tokens = fields.Integer()
    total_tokens = fields.Integer()


class StepSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    status = _one_of(STEP_STATUSES)
    attempts = fields.Integer()
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    output = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    token_usage = fields.Nested(TokenUsageSchema)
    cost = fields.Decimal(as_string=True)
    execution_time_ms = fields.Integer(allow_none=True)
    tools_used = fields.List(fields.String())
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)


class PhaseSchema(Schema):
    id = fields.UUID()
    code = fields.String()
    phase_code = fields.String()
    name = fields.String()
    phase_name = fields.String()
    position = fields.Integer()
    status = _one_of(STEP_STATUSES)
    response_text = fields.String(allow_none=True)
    token_usage = fields.Nested(TokenUsageSchema)
    cost = fields.Decimal(as_string=True)
    execution_time_ms = fields.Integer(allow_none=True)
    started_at = fields.DateTime(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)
    steps = fields.List(fields.Nested(StepSchema))


class EventSchema(Schema):
    seq = fields.Integer()
    type = fields.String()
    status = fields.String(allow_none=True)
    step = fields.String(allow_none=True)
    timestamp = fields.DateTime()
    data = fields.Dict()


class JobSchema(Schema):
    id = fields.UUID()
    kind = _one_of(KINDS)
    status = _one_of(STATUSES)
    priority = _one_of(PRIORITIES)
    progress = fields.Integer()
    title = fields.String()
    project_id = fields.UUID(allow_none=True)
    agent_id = fields.UUID(allow_none=True)
    template_id = fields.UUID(allow_none=True)
    created_by = fields.UUID(allow_none=True)
    input = fields.Dict()
    settings = fields.Dict()
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    total_steps = fields.Integer()
    completed_steps = fields.Integer()
    token_usage = fields.Nested(TokenUsageSchema)
    cost = fields.Decimal(as_string=True)
    phases = fields.List(fields.Nested(PhaseSchema))
    history = fields.List(fields.Nested(EventSchema))
    history_next = fields.Integer(
        allow_none=True,
        metadata={
            "description": "More events follow (``GET /jobs/{id}`` pages its history): pass "
            "this as ``history_after`` for the next page. Null on the last page."
        },
    )
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    started_at = fields.DateTime(allow_none=True)
    finished_at = fields.DateTime(allow_none=True)


class JobDetailArgsSchema(Schema):
    """``GET /jobs/{id}`` returns its history a page at a time."""

    history_limit = fields.Integer(
        load_default=100,
        validate=validate.Range(min=1, max=1000),
        metadata={"description": "At most this many events in ``history`` (1-1000)."},
    )
    history_after = fields.Integer(
        load_default=0,
        validate=validate.Range(min=0, max=2**62),
        metadata={
            "description": "Only events numbered (``seq``) after this one: the previous "
            "page's ``history_next``."
        },
    )


class JobSummarySchema(Schema):
    id = fields.UUID()
    kind = _one_of(KINDS)
    status = _one_of(STATUSES)
    priority = _one_of(PRIORITIES)
    progress = fields.Integer()
    title = fields.String()
    project_id = fields.UUID(allow_none=True)
    agent_id = fields.UUID(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class JobListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(JobSummarySchema))


class AcceptedPhaseSchema(Schema):
    code = fields.String()
    name = fields.String()
    status = _one_of(STEP_STATUSES)
    steps = fields.List(fields.String())


class AcceptedSchema(Schema):
    """The 202 body every kind shares; each kind adds its seed's id alias."""

    id = fields.UUID()
    job_id = fields.UUID()
    kind = _one_of(KINDS)
    status = _one_of(STATUSES)
    priority = _one_of(PRIORITIES)
    message = fields.String()
    location = fields.String()
    phases = fields.List(fields.Nested(AcceptedPhaseSchema))
    created_at = fields.DateTime()


# -- presenters: rows -> the dicts the schemas dump ---------------------------------------


def usage(row: Any) -> dict[str, int]:
    return {
        "prompt_tokens": row.prompt_tokens,
        "completion_tokens": row.completion_tokens,
        "total_tokens": row.prompt_tokens + row.completion_tokens,
    }


def present_history(detail: JobDetail) -> list[dict[str, Any]]:
    out = []
    for event in detail.events:
        data = event.data or {}
        out.append(
            {
                "seq": event.seq,
                "type": event.type,
                "status": data.get("status") or event.type.rsplit(".", 1)[-1],
                "step": data.get("step") or data.get("phase") or event.type.split(".", 1)[0],
                "timestamp": event.created_at,
                "data": data,
            }
        )
    return out


def present_phases(detail: JobDetail) -> list[dict[str, Any]]:
    phases = []
    for phase in detail.phases:
        steps = [s for s in detail.steps if s.phase_id == phase.id]
        phases.append(
            {
                "id": phase.id,
                "code": phase.code,
                "phase_code": phase.code,
                "name": phase.name,
                "phase_name": phase.name,
                "position": phase.position,
                "status": phase.status,
                "response_text": phase.output,
                "token_usage": usage(phase),
                "cost": phase.cost,
                "execution_time_ms": phase.execution_time_ms,
                "started_at": phase.started_at,
                "completed_at": phase.completed_at,
                "steps": [
                    {
                        "id": s.id,
                        "name": s.name,
                        "status": s.status,
                        "attempts": s.attempts,
                        "provider": s.provider,
                        "model": s.model,
                        "output": s.output,
                        "error": s.error,
                        "token_usage": usage(s),
                        "cost": s.cost,
                        "execution_time_ms": s.execution_time_ms,
                        "tools_used": list(s.tools_used or []),
                        "started_at": s.started_at,
                        "completed_at": s.completed_at,
                    }
                    for s in sorted(steps, key=lambda s: s.position)
                ],
            }
        )
    return phases


def present_job(detail: JobDetail) -> dict[str, Any]:
    job = detail.job
    prompt = sum(s.prompt_tokens for s in detail.steps)
    completion = sum(s.completion_tokens for s in detail.steps)
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "progress": job.progress,
        "title": job.title,
        "project_id": job.project_id,
        "agent_id": job.agent_id,
        "template_id": job.template_id,
        "created_by": job.created_by_id,
        "input": job.input,
        "settings": job.settings,
        "result": job.result,
        "error": job.error,
        "total_steps": job.total_steps,
        "completed_steps": job.completed_steps,
        "token_usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "cost": sum((s.cost for s in detail.steps), 0),
        "phases": present_phases(detail),
        "history": present_history(detail),
        "history_next": detail.history_next,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
    }


def present_accepted(detail: JobDetail, location: str, message: str) -> dict[str, Any]:
    job = detail.job
    return {
        "id": job.id,
        "job_id": job.id,
        "kind": job.kind,
        "status": job.status,
        "priority": job.priority,
        "message": message,
        "location": location,
        "created_at": job.created_at,
        "phases": [
            {
                "code": p.code,
                "name": p.name,
                "status": p.status,
                "steps": [s.name for s in detail.steps if s.phase_id == p.id],
            }
            for p in detail.phases
        ],
    }
