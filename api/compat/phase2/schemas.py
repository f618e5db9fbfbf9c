"""Seed 004's bodies. Requests reuse the canonical build/analysis schemas (one validation)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump

from api.compat.core import page_meta
from api.compat.phase2 import STATUS_WORDS, present_results
from orchestration.jobs import JobDetail

STATUS = fields.String(metadata={"enum": STATUS_WORDS.enum()})


class Phase2TokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer()


class Phase2BuildAcceptedSchema(Schema):
    task_id = fields.UUID(required=True)
    status = STATUS
    message = fields.String()


class Phase2BuildSchema(Schema):
    task_id = fields.UUID(required=True)
    project_name = fields.String()
    status = STATUS
    progress = fields.Integer()
    created_at = fields.DateTime()
    created_by = fields.String(allow_none=True)
    goal = fields.String()
    results = fields.Dict(allow_none=True)
    error = fields.String(allow_none=True)


class Phase2BuildHistorySchema(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)
    builds = fields.List(fields.Nested(Phase2BuildSchema), required=True)

    @pre_dump
    def _page(self, page: Any, **_: Any) -> dict[str, Any]:
        return {**page_meta(page), "builds": page.items}


class Phase2MessageSchema(Schema):
    message = fields.String(required=True)


class Phase2SecurityIssueSchema(Schema):
    issue = fields.String()
    severity = fields.String()
    line = fields.Integer(allow_none=True)
    recommendation = fields.String(allow_none=True)


class Phase2AnalysisSchema(Schema):
    analysis_id = fields.UUID(required=True)
    project_name = fields.String()
    timestamp = fields.DateTime()
    performed_by = fields.String(allow_none=True)
    quality_score = fields.Float(allow_none=True)
    security_issues = fields.List(fields.Dict())
    code_smells = fields.Integer(allow_none=True)
    type_errors = fields.Integer(allow_none=True)
    coverage_percent = fields.Float(allow_none=True)
    recommendations = fields.List(fields.String())
    # Beyond the document's example: how a poller knows the results are in.
    status = STATUS
    progress = fields.Integer()


class Phase2HealthSchema(Schema):
    status = fields.String(required=True)
    timestamp = fields.DateTime(required=True)
    version = fields.String(required=True)


class Phase2ProbeSchema(Schema):
    status = fields.String(required=True)
    timestamp = fields.DateTime(required=True)


class Phase2SystemStatusSchema(Schema):
    status = fields.String(required=True)
    timestamp = fields.DateTime(required=True)
    version = fields.String(required=True)
    components = fields.Dict(keys=fields.String(), values=fields.String(), required=True)
    metrics = fields.Dict(required=True)


def username(detail: JobDetail) -> str | None:
    return detail.created_by.username if detail.created_by else None


def present_build(detail: JobDetail) -> dict[str, Any]:
    job, inp = detail.job, detail.job.input or {}
    return {
        "task_id": job.id,
        "project_name": inp.get("project_name"),
        "status": STATUS_WORDS.word(job.status),
        "progress": job.progress,
        "created_at": job.created_at,
        "created_by": username(detail),
        "goal": inp.get("goal"),
        "results": present_results(job.result),
        "error": job.error,
    }


def present_analysis(detail: JobDetail) -> dict[str, Any]:
    job, inp, result = detail.job, detail.job.input or {}, detail.job.result or {}
    return {
        "analysis_id": job.id,
        "project_name": inp.get("project_name"),
        "timestamp": job.created_at,
        "performed_by": username(detail),
        "quality_score": result.get("quality_score"),
        "security_issues": result.get("security_issues") or [],
        "code_smells": result.get("code_smells"),
        "type_errors": result.get("type_errors"),
        "coverage_percent": result.get("coverage_percent"),
        "recommendations": result.get("recommendations") or [],
        "status": STATUS_WORDS.word(job.status),
        "progress": job.progress,
    }
