"""Code analyses (seed 004): one parallel step per analysis type, joined into a score."""

from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from api.analyses.schemas import AnalysisCreateSchema, AnalysisSchema, present_analysis
from api.builds.routes import CancelledSchema
from api.common.openapi import answers, job_submission
from api.common.schemas import list_envelope
from api.extensions import limiter
from api.jobs.schemas import AcceptedSchema, JobListArgsSchema, JobListSchema
from api.jobs.views import list_for, submission_from, submit
from api.ratelimits import analysis_limit
from api.security import current_principal, requires, sessions
from models import JobKind
from orchestration import jobs

blp = Blueprint(
    "analyses", __name__, url_prefix="/api/v1/analyses", description="Code analysis jobs"
)


# Seed 004: per user, one bucket for every route that starts an analysis (and the dialect's).
analysis_submissions = limiter.shared_limit(analysis_limit, scope="analyses")


class AnalysisAcceptedSchema(AcceptedSchema):
    analysis_id = fields.UUID()


@blp.route("")
class Analyses(MethodView):
    @analysis_submissions
    @requires("job:create")
    @blp.arguments(AnalysisCreateSchema())  # one instance: not built per request
    @blp.response(202, AnalysisAcceptedSchema)
    @job_submission
    def post(self, data):
        """Start an analysis; the analysis types run in parallel."""
        submission = submission_from(
            data,
            kind=JobKind.ANALYSIS,
            title=f"{data['project_name']}: {', '.join(data['analysis_types'])}",
            job_input={
                "project_name": data["project_name"],
                "analysis_types": data["analysis_types"],
                "code": data.get("code"),
                "parameters": data["parameters"],
            },
        )
        return submit(
            submission, "analyses.AnalysisById", "Analysis started", id_alias="analysis_id"
        )

    @requires("job:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args):
        """List analyses."""
        return list_envelope(list_for(JobKind.ANALYSIS, args))


@blp.route("/<uuid:job_id>")
class AnalysisById(MethodView):
    @requires("job:read")
    @blp.response(200, AnalysisSchema)
    def get(self, job_id: uuid.UUID):
        """Analysis status and, once completed, its scores and findings."""
        return present_analysis(
            jobs.get_job(
                sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.ANALYSIS
            )
        )

    @requires("job:cancel")
    @blp.response(200, CancelledSchema)
    @answers(409, "The analysis has already finished.")
    def delete(self, job_id: uuid.UUID):
        """Cancel an analysis; a finished one answers 409."""
        job = jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.ANALYSIS
        )
        return {"message": "Analysis cancelled successfully", "id": job.id, "status": job.status}
