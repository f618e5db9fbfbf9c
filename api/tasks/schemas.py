from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates_schema

from api.common.schemas import UtcDateTime
from api.jobs.schemas import JobSchema, JobSubmitBaseSchema, present_job
from orchestration.jobs import JobDetail


class TaskCreateSchema(JobSubmitBaseSchema):
    """Seed 000 (agent_id, description, parameters) and seed 002 (title, due_date, metadata)."""

    title = fields.String(validate=validate.Length(min=1, max=500))
    description = fields.String(validate=validate.Length(min=1, max=20_000))
    parameters = fields.Dict(keys=fields.String(), load_default=dict)
    metadata = fields.Dict(keys=fields.String(), load_default=dict)
    due_date = UtcDateTime(default_timezone=None)

    @validates_schema
    def _needs_text(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("title") and not data.get("description"):
            raise ValidationError("title or description is required", "description")
        task_type = (data.get("parameters") or {}).get("task_type")
        if task_type is not None and not isinstance(task_type, str):
            raise ValidationError("must be a string", "parameters.task_type")


class TaskSchema(JobSchema):
    description = fields.String(allow_none=True)
    parameters = fields.Dict()
    metadata = fields.Dict()
    due_date = fields.String(allow_none=True)
    completed_at = fields.DateTime(allow_none=True)


def present_task(detail: JobDetail) -> dict[str, Any]:
    data = present_job(detail)
    inp = detail.job.input or {}
    return {
        **data,
        "description": inp.get("description"),
        "parameters": inp.get("parameters") or {},
        "metadata": inp.get("metadata") or {},
        "due_date": inp.get("due_date"),
        "completed_at": detail.job.finished_at if detail.job.status == "completed" else None,
    }
