"""Seed 003's bodies. Requests reuse the canonical schemas without the fields the document
does not name (one validation); answers reuse the canonical presenters where the document
shows the same fields, with its status words, ``data``+``pagination`` lists and names."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate
from webargs.fields import DelimitedList

from api.analytics.schemas import UsageAnalyticsSchema
from api.auth.schemas import SignedInUserSchema
from api.common.schemas import ListArgsSchema, ListEnvelopeSchema
from api.compat.orchestrator import STATUS_WORDS
from api.jobs.schemas import STEP_STATUSES, PhaseSchema
from api.orchestrations.schemas import OrchestrateSchema, RunSchema, present_run
from api.organizations.schemas import OrganizationUpdateSchema
from api.projects.schemas import ProjectCreateSchema, ProjectUpdateSchema, UserRefSchema
from api.templates.schemas import TemplateListArgsSchema, TemplateSchema
from api.webhooks.schemas import WebhookCreateSchema, WebhookSchema, WebhookUpdateSchema
from orchestration.estimates import EstimatedRun
from orchestration.jobs import JobDetail
from orchestration.listing import MAX_LIMIT
from orchestration.projects import PRIORITIES, STATUSES, ProjectView

RUN_STATUS = fields.String(metadata={"enum": STATUS_WORDS.enum()})
DEFAULT_LIMIT = 50  # section 2.3: "limit: Number of results (default: 50, max: 100)"
GITHUB_FIELDS = ("github_repo", "github_app_id", "github_installation_id")
# Baton runs no file-system, git or deployment integrations: their counts are zero.
INTEGRATION_KINDS = ("file_system", "git_operations", "deployment")


# -- lists (sections 5 and 6) -----------------------------------------------------------------


class OrchestratorListArgsSchema(ListArgsSchema):
    """``limit`` (default 50, max 100), ``offset`` or ``cursor``, ``sort``, and the
    ``created_after``/``created_before`` date range."""

    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )


class OrchestratorPaginationSchema(ListEnvelopeSchema):
    """Section 5.2: total, limit, offset, has_next, has_prev, next_cursor, prev_cursor."""


def _page(page: Any) -> dict[str, Any]:
    return {"data": page.items, "pagination": page}


# -- auth -------------------------------------------------------------------------------------


class OrchestratorUserSchema(SignedInUserSchema):
    class Meta:
        exclude = ("username", "full_name")


class OrchestratorTokenSchema(Schema):
    access_token = fields.String(required=True)
    refresh_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)
    user = fields.Nested(OrchestratorUserSchema, required=True)


class OrchestratorMessageSchema(Schema):
    message = fields.String(required=True)


# -- organizations ----------------------------------------------------------------------------


class OrchestratorOrganizationUpdateSchema(OrganizationUpdateSchema):
    class Meta:
        exclude = ("require_2fa",)


# -- projects ---------------------------------------------------------------------------------


class OrchestratorProjectCreateSchema(ProjectCreateSchema):
    class Meta:
        exclude = (*GITHUB_FIELDS, "status")


class OrchestratorProjectUpdateSchema(ProjectUpdateSchema):
    class Meta:
        exclude = GITHUB_FIELDS


class OrchestratorProjectListArgsSchema(OrchestratorListArgsSchema):
    # ``?status=active,completed`` (section 6.1 multiple values).
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUSES)))
    priority = DelimitedList(fields.String(validate=validate.OneOf(PRIORITIES)))
    search = fields.String(validate=validate.Length(min=1, max=200))


class OrchestratorRunRefSchema(Schema):
    id = fields.UUID(required=True)
    status = RUN_STATUS
    success_rate = fields.Float()
    created_at = fields.DateTime()


class OrchestratorProjectSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String()
    description = fields.String(allow_none=True)
    topic = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": list(STATUSES)})
    priority = fields.String(metadata={"enum": list(PRIORITIES)})
    created_by = fields.Nested(UserRefSchema, allow_none=True)
    metadata = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: ProjectView, **_: Any) -> dict[str, Any]:
        p = view.project
        return {
            "id": p.id,
            "name": p.name,
            "description": p.description,
            "topic": p.topic,
            "status": p.status,
            "priority": p.priority,
            "created_by": view.created_by,
            "metadata": p.metadata_ or {},
            "orchestration_runs": [run_ref(job) for job in view.runs],
            "created_at": p.created_at,
            "updated_at": p.updated_at,
        }


class OrchestratorProjectDetailSchema(OrchestratorProjectSchema):
    orchestration_runs = fields.List(fields.Nested(OrchestratorRunRefSchema))


class OrchestratorProjectListSchema(Schema):
    data = fields.List(fields.Nested(OrchestratorProjectSchema), required=True)
    pagination = fields.Nested(OrchestratorPaginationSchema, required=True)

    @pre_dump
    def _envelope(self, page: Any, **_: Any) -> dict[str, Any]:
        return _page(page)


# -- orchestration ----------------------------------------------------------------------------


class OrchestratorOrchestrateSchema(OrchestrateSchema):
    """Section 2.4's body; ``custom_phases`` wins over ``template_id``."""

    class Meta:
        exclude = ("agent_id", "priority")


class OrchestratorPlannedPhaseSchema(Schema):
    code = fields.String()
    name = fields.String()
    status = fields.String(metadata={"enum": STEP_STATUSES})
    estimated_duration = fields.String()


class OrchestratorStartedSchema(Schema):
    run_id = fields.UUID(required=True)
    status = RUN_STATUS
    message = fields.String()
    estimated_completion = fields.DateTime()
    phases = fields.List(fields.Nested(OrchestratorPlannedPhaseSchema))

    @pre_dump
    def _from_run(self, run: EstimatedRun, **_: Any) -> dict[str, Any]:
        job = run.detail.job
        return {
            "run_id": job.id,
            "status": STATUS_WORDS.word(job.status),
            "message": "Orchestration started successfully",
            "estimated_completion": run.completion,
            "phases": [
                {
                    "code": phase.code,
                    "name": phase.name,
                    "status": phase.status,
                    "estimated_duration": duration_words(ms),
                }
                for phase, ms in zip(run.detail.phases, run.phase_ms, strict=True)
            ],
        }


class OrchestratorRunSchema(RunSchema):
    status = RUN_STATUS


class OrchestratorRunDetailSchema(Schema):
    run = fields.Nested(OrchestratorRunSchema, required=True)
    phases = fields.List(fields.Nested(PhaseSchema), required=True)
    integration_operations = fields.List(fields.Dict(), required=True)

    @pre_dump
    def _from_detail(self, detail: JobDetail, **_: Any) -> dict[str, Any]:
        body = present_run(detail)
        body["run"]["status"] = STATUS_WORDS.word(body["run"]["status"])
        return body


class OrchestratorRunListArgsSchema(OrchestratorListArgsSchema):
    project_id = fields.UUID()
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUS_WORDS.enum())))


class OrchestratorProjectRefSchema(Schema):
    id = fields.UUID()
    name = fields.String(allow_none=True)


class OrchestratorRunRowSchema(Schema):
    id = fields.UUID(required=True)
    project = fields.Nested(OrchestratorProjectRefSchema, allow_none=True)
    topic = fields.String(allow_none=True)
    status = RUN_STATUS
    success_rate = fields.Float()
    execution_time_ms = fields.Integer(allow_none=True)
    created_at = fields.DateTime()

    @pre_dump
    def _from_job(self, job: Any, **_: Any) -> dict[str, Any]:
        run = _run_of(job)
        project = {"id": job.project_id, "name": job.project_name} if job.project_id else None
        return {
            "id": job.id,
            "project": project,
            "topic": run["topic"],
            "status": STATUS_WORDS.word(job.status),
            "success_rate": run["success_rate"],
            "execution_time_ms": run["execution_time_ms"],
            "created_at": job.created_at,
        }


class OrchestratorRunListSchema(Schema):
    data = fields.List(fields.Nested(OrchestratorRunRowSchema), required=True)
    pagination = fields.Nested(OrchestratorPaginationSchema, required=True)

    @pre_dump
    def _envelope(self, page: Any, **_: Any) -> dict[str, Any]:
        return _page(page)


class OrchestratorCancelledSchema(Schema):
    message = fields.String(required=True)
    run_id = fields.UUID(required=True)
    status = RUN_STATUS


# -- templates --------------------------------------------------------------------------------


class OrchestratorTemplateListArgsSchema(TemplateListArgsSchema):
    limit = fields.Integer(
        load_default=DEFAULT_LIMIT, validate=validate.Range(min=1, max=MAX_LIMIT)
    )


class OrchestratorTemplateListSchema(Schema):
    data = fields.List(fields.Nested(TemplateSchema), required=True)
    pagination = fields.Nested(OrchestratorPaginationSchema, required=True)

    @pre_dump
    def _envelope(self, page: Any, **_: Any) -> dict[str, Any]:
        return _page(page)


# -- analytics --------------------------------------------------------------------------------


class OrchestratorUsageSchema(UsageAnalyticsSchema):
    @pre_dump
    def _from_analytics(self, report: Any, **kwargs: Any) -> dict[str, Any]:
        body = super()._from_analytics(report, **kwargs)
        body["integration_usage"] = dict.fromkeys(INTEGRATION_KINDS, 0)
        return body


# -- webhooks ---------------------------------------------------------------------------------


class OrchestratorWebhookCreateSchema(WebhookCreateSchema):
    class Meta:
        exclude = ("event_types", "secret", "description")


class OrchestratorWebhookUpdateSchema(WebhookUpdateSchema):
    class Meta:
        exclude = ("event_types", "description")


class OrchestratorWebhookListSchema(Schema):
    data = fields.List(fields.Nested(WebhookSchema), required=True)
    pagination = fields.Nested(OrchestratorPaginationSchema, required=True)

    @pre_dump
    def _envelope(self, page: Any, **_: Any) -> dict[str, Any]:
        return _page(page)


# -- presenters -------------------------------------------------------------------------------


def _run_of(job: Any) -> dict[str, Any]:
    """The canonical run presenter over a job whose ``phase_rows`` are loaded."""
    return present_run(JobDetail(job=job, phases=job.phase_rows, steps=[], events=[]))["run"]


def run_ref(job: Any) -> dict[str, Any]:
    return {
        "id": job.id,
        "status": STATUS_WORDS.word(job.status),
        "success_rate": _run_of(job)["success_rate"],
        "created_at": job.created_at,
    }


def duration_words(milliseconds: int) -> str:
    """``"5 minutes"``, ``"1 hour"``, ``"40 seconds"`` (to the nearest unit, at least 1)."""
    seconds = max(1, round(milliseconds / 1000))
    for unit, size in (("hour", 3600), ("minute", 60), ("second", 1)):
        if seconds >= size:
            count = max(1, round(seconds / size))
            return f"{count} {unit}{'' if count == 1 else 's'}"
    return "1 second"
