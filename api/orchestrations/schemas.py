from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.jobs.schemas import (
    PRIORITIES,
    STATUSES,
    EventSchema,
    JobSubmitBaseSchema,
    PhaseSchema,
    present_history,
    present_phases,
)
from orchestration.jobs import JobDetail

PHASE_NAME = validate.Length(min=1, max=80)


class OrchestrateSchema(JobSubmitBaseSchema):
    topic = fields.String(required=True, validate=validate.Length(min=1, max=10_000))
    integration_enabled = fields.Boolean(load_default=False)
    # custom_phases wins over template_id when both are given.
    custom_phases = fields.List(
        fields.String(validate=PHASE_NAME), validate=validate.Length(min=1, max=20)
    )
    template_id = fields.UUID()


class RunSchema(Schema):
    id = fields.UUID()
    project_id = fields.UUID(allow_none=True)
    agent_id = fields.UUID(allow_none=True)
    template_id = fields.UUID(allow_none=True)
    topic = fields.String()
    status = fields.String(metadata={"enum": STATUSES})
    priority = fields.String(metadata={"enum": PRIORITIES})
    progress = fields.Integer()
    total_phases = fields.Integer()
    completed_phases = fields.Integer()
    success_rate = fields.Float()
    integration_enabled = fields.Boolean()
    execution_time_ms = fields.Integer(allow_none=True)
    token_usage = fields.Dict()
    cost = fields.Decimal(as_string=True)
    result = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class OrchestrationSchema(Schema):
    run = fields.Nested(RunSchema)
    phases = fields.List(fields.Nested(PhaseSchema))
    history = fields.List(fields.Nested(EventSchema))
    integration_operations = fields.List(fields.Dict())


def present_run(detail: JobDetail) -> dict[str, Any]:
    job = detail.job
    completed = [p for p in detail.phases if p.status == "completed"]
    finished = [p for p in detail.phases if p.status in ("completed", "failed")]
    prompt = sum(p.prompt_tokens for p in detail.phases)
    completion = sum(p.completion_tokens for p in detail.phases)
    return {
        "run": {
            "id": job.id,
            "project_id": job.project_id,
            "agent_id": job.agent_id,
            "template_id": job.template_id,
            "topic": (job.input or {}).get("topic"),
            "status": job.status,
            "priority": job.priority,
            "progress": job.progress,
            "total_phases": len(detail.phases),
            "completed_phases": len(completed),
            "success_rate": round(100.0 * len(completed) / len(finished), 1) if finished else 0.0,
            "integration_enabled": bool((job.input or {}).get("integration_enabled")),
            "execution_time_ms": sum(p.execution_time_ms or 0 for p in detail.phases),
            "token_usage": {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            },
            "cost": sum((p.cost for p in detail.phases), 0),
            "result": job.result,
            "error": job.error,
            "created_at": job.created_at,
            "updated_at": job.updated_at,
            "finished_at": job.finished_at,
        },
        "phases": present_phases(detail),
        "history": present_history(detail),
        # Integration operations (file system, git, deploy) are not run by Baton.
        "integration_operations": [],
    }
