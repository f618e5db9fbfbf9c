"""Orchestration runs (seed 003): POST /orchestrate, then /orchestrations/{id}."""

from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.common.openapi import answers, job_submission
from api.common.schemas import list_envelope
from api.jobs.schemas import AcceptedSchema, JobListArgsSchema, JobListSchema
from api.jobs.views import list_for, submission_from, submit
from api.orchestrations.schemas import OrchestrateSchema, OrchestrationSchema, present_run
from api.security import current_principal, requires, sessions
from models import JobKind
from orchestration import jobs

blp = Blueprint("orchestrations", __name__, url_prefix="/api/v1", description="Orchestration runs")


class RunAcceptedSchema(AcceptedSchema):
    run_id = fields.UUID()


class RunCancelledSchema(Schema):
    message = fields.String()
    run_id = fields.UUID()
    status = fields.String()


@blp.route("/orchestrate")
class Orchestrate(MethodView):
    @requires("job:create")
    @blp.arguments(OrchestrateSchema())  # one instance: not built per request
    @blp.response(202, RunAcceptedSchema)
    @job_submission
    def post(self, data):
        """Start an orchestration run: phases from custom_phases, a template, or the default."""
        submission = submission_from(
            data,
            kind=JobKind.ORCHESTRATION,
            title=data["topic"][:200],
            job_input={"topic": data["topic"], "integration_enabled": data["integration_enabled"]},
            template_id=data.get("template_id"),
            custom_phases=data.get("custom_phases"),
        )
        return submit(
            submission,
            "orchestrations.OrchestrationById",
            "Orchestration started successfully",
            id_alias="run_id",
        )


@blp.route("/orchestrations")
class Orchestrations(MethodView):
    @requires("job:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args):
        """List orchestration runs (filters: project_id, status, priority)."""
        return list_envelope(list_for(JobKind.ORCHESTRATION, args))


@blp.route("/orchestrations/<uuid:job_id>")
class OrchestrationById(MethodView):
    @requires("job:read")
    @blp.response(200, OrchestrationSchema)
    def get(self, job_id: uuid.UUID):
        """The run, its phases with response text, token usage and timings, and its history."""
        return present_run(
            jobs.get_job(
                sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.ORCHESTRATION
            )
        )


@blp.route("/orchestrations/<uuid:job_id>/cancel")
class OrchestrationCancel(MethodView):
    @requires("job:cancel")
    @blp.response(200, RunCancelledSchema)
    @answers(409, "The run has already finished.")
    def post(self, job_id: uuid.UUID):
        """Cancel a run before its next phase; a finished run answers 409."""
        job = jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.ORCHESTRATION
        )
        return {
            "message": "Orchestration cancelled successfully",
            "run_id": job.id,
            "status": job.status,
        }
