from __future__ import annotations

from typing import Any

from marshmallow import fields, validate

from api.builds.schemas import PROJECT_NAME
from api.jobs.schemas import JobSchema, JobSubmitBaseSchema, present_job
from orchestration.jobs import JobDetail
from orchestration.plans import ANALYSIS_TYPES


class AnalysisCreateSchema(JobSubmitBaseSchema):
    project_name = fields.String(required=True, validate=PROJECT_NAME)
    analysis_types = fields.List(
        fields.String(validate=validate.OneOf(ANALYSIS_TYPES)),
        load_default=lambda: ["quality", "security", "types"],
        validate=[validate.Length(min=1, max=len(ANALYSIS_TYPES)), lambda v: len(set(v)) == len(v)],
    )
    code = fields.String(validate=validate.Length(max=200_000))
    parameters = fields.Dict(keys=fields.String(), load_default=dict)


class AnalysisSchema(JobSchema):
    analysis_id = fields.UUID()
    project_name = fields.String()
    analysis_types = fields.List(fields.String())
    timestamp = fields.DateTime()
    performed_by = fields.String(allow_none=True)
    quality_score = fields.Float(allow_none=True)
    scores = fields.Dict()
    security_issues = fields.List(fields.Dict())
    code_smells = fields.Integer(allow_none=True)
    type_errors = fields.Integer(allow_none=True)
    coverage_percent = fields.Float(allow_none=True)
    recommendations = fields.List(fields.String())


def present_analysis(detail: JobDetail) -> dict[str, Any]:
    data = present_job(detail)
    inp = detail.job.input or {}
    result = detail.job.result or {}
    return {
        **data,
        "analysis_id": detail.job.id,
        "project_name": inp.get("project_name"),
        "analysis_types": inp.get("analysis_types") or [],
        "timestamp": detail.job.created_at,
        "performed_by": detail.created_by.username if detail.created_by else None,
        "quality_score": result.get("quality_score"),
        "scores": result.get("scores") or {},
        "security_issues": result.get("security_issues") or [],
        "code_smells": result.get("code_smells"),
        "type_errors": result.get("type_errors"),
        "coverage_percent": result.get("coverage_percent"),
        "recommendations": result.get("recommendations") or [],
    }
