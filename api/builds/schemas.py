from __future__ import annotations

from typing import Any

from marshmallow import ValidationError, fields, validate, validates

from api.jobs.schemas import JobSchema, JobSubmitBaseSchema, present_job
from orchestration.jobs import JobDetail

# Seed 004: "project name validated against injection patterns".
PROJECT_NAME = validate.Regexp(
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$",
    error="letters, digits, '.', '_' and '-' only, starting with a letter or digit, at most 100",
)


class BuildCreateSchema(JobSubmitBaseSchema):
    project_name = fields.String(required=True, validate=PROJECT_NAME)
    goal = fields.String(required=True, validate=validate.Length(min=1, max=5000))
    parameters = fields.Dict(keys=fields.String(), load_default=dict)

    @validates("parameters")
    def _components(self, value: dict[str, Any], **_: Any) -> None:
        components = value.get("components")
        if components is None:
            return
        if (
            not isinstance(components, list)
            or not 1 <= len(components) <= 20
            or not all(isinstance(c, str) and 1 <= len(c) <= 80 for c in components)
            or len(set(components)) != len(components)
        ):
            raise ValidationError("components must be 1-20 distinct names of 1-80 characters")


class BuildSchema(JobSchema):
    task_id = fields.UUID()
    project_name = fields.String()
    goal = fields.String()
    parameters = fields.Dict()
    results = fields.Dict(allow_none=True)
    created_by_name = fields.String(allow_none=True)


def present_build(detail: JobDetail) -> dict[str, Any]:
    data = present_job(detail)
    inp = detail.job.input or {}
    return {
        **data,
        "task_id": detail.job.id,
        "project_name": inp.get("project_name"),
        "goal": inp.get("goal"),
        "parameters": inp.get("parameters") or {},
        "results": detail.job.result,
        "created_by_name": detail.created_by.username if detail.created_by else None,
    }
