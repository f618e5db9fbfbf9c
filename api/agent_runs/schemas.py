from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from orchestration.jobs import JobDetail

WAIT = validate.Range(min=0, max=60)


class AgentTestSchema(Schema):
    test_payload = fields.String(
        load_default="Hello, agent!", validate=validate.Length(min=1, max=20_000)
    )
    test_type = fields.String(load_default="simple_echo", validate=validate.Length(min=1, max=60))
    wait_seconds = fields.Float(load_default=30, validate=WAIT)


class AgentExecuteSchema(Schema):
    input = fields.String(required=True, validate=validate.Length(min=1, max=100_000))
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    task_type = fields.String(validate=validate.Length(min=1, max=60))
    wait_seconds = fields.Float(load_default=30, validate=WAIT)


class AgentTestResultSchema(Schema):
    test_id = fields.UUID()
    status = fields.String()
    result = fields.String(allow_none=True)
    output = fields.String(allow_none=True)
    execution_time_ms = fields.Integer(allow_none=True)
    provider_used = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    providers_tried = fields.List(fields.String())
    location = fields.String()


class AgentRunSchema(Schema):
    run_id = fields.UUID()
    status = fields.String()
    output = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    tokens_used = fields.Integer()
    cost = fields.Decimal(as_string=True)
    execution_time_ms = fields.Integer(allow_none=True)
    provider_used = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    providers_tried = fields.List(fields.String())
    tools_used = fields.List(fields.String())
    location = fields.String()
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


def _step(detail: JobDetail) -> Any:
    return detail.steps[0] if detail.steps else None


def _providers_tried(detail: JobDetail) -> list[str]:
    """Every provider the run's step tried, in order (after fallback, the last answered)."""
    for event in reversed(detail.events):
        if event.type in ("step.completed", "step.failed"):
            return list((event.data or {}).get("providers_tried") or [])
    return []


def present_test(detail: JobDetail, location: str) -> dict[str, Any]:
    step = _step(detail)
    job = detail.job
    result = {
        "completed": "Agent configuration valid",
        "failed": f"Agent configuration invalid: {job.error}",
    }.get(job.status, "The test is still running; poll its location")
    return {
        "test_id": job.id,
        "status": job.status,
        "result": result,
        "output": step.output if step else None,
        "execution_time_ms": step.execution_time_ms if step else None,
        "provider_used": step.provider if step else None,
        "model": step.model if step else None,
        "providers_tried": _providers_tried(detail),
        "location": location,
    }


def present_run(detail: JobDetail, location: str) -> dict[str, Any]:
    step = _step(detail)
    job = detail.job
    return {
        "run_id": job.id,
        "status": job.status,
        "output": step.output if step else None,
        "error": job.error,
        "tokens_used": (step.prompt_tokens + step.completion_tokens) if step else 0,
        "cost": step.cost if step else 0,
        "execution_time_ms": step.execution_time_ms if step else None,
        "provider_used": step.provider if step else None,
        "model": step.model if step else None,
        "providers_tried": _providers_tried(detail),
        "tools_used": list(step.tools_used or []) if step else [],
        "location": location,
        "created_at": job.created_at,
        "completed_at": job.finished_at,
    }
