"""GET /jobs and /jobs/{id}: one view of every job kind, read from PostgreSQL."""

from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.openapi import answers
from api.common.schemas import list_envelope
from api.jobs.schemas import (
    JobDetailArgsSchema,
    JobListArgsSchema,
    JobListSchema,
    JobSchema,
    JobSummarySchema,
    present_job,
)
from api.jobs.views import list_for
from api.security import current_principal, requires, sessions
from orchestration import jobs

blp = Blueprint("jobs", __name__, url_prefix="/api/v1/jobs", description="Jobs of every kind")


@blp.route("")
class Jobs(MethodView):
    @requires("job:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args):
        """List the organization's jobs (filters: status, kind, project_id, agent_id, priority)."""
        return list_envelope(list_for(None, args))


@blp.route("/<uuid:job_id>")
class JobById(MethodView):
    @requires("job:read")
    @blp.arguments(JobDetailArgsSchema, location="query")
    @blp.response(200, JobSchema)
    def get(self, args, job_id: uuid.UUID):
        """A job with its phases, steps, token usage, cost, result, error, and its history a
        page at a time (``history_limit`` events after ``history_after``; ``history_next``
        names the next page)."""
        page = jobs.HistoryPage(after=args["history_after"], limit=args["history_limit"])
        detail = jobs.get_job(
            sessions(), principal=current_principal(), job_id=job_id, history=page
        )
        return present_job(detail)


@blp.route("/<uuid:job_id>/resume")
class JobResume(MethodView):
    @requires("job:cancel")
    @blp.response(200, JobSummarySchema)
    @answers(409, "The job is not paused.")
    def post(self, job_id: uuid.UUID):
        """Resume a paused job from the step it stopped before; other states answer 409."""
        return jobs.resume_job(sessions(), principal=current_principal(), job_id=job_id)


@blp.route("/<uuid:job_id>/cancel")
class JobCancel(MethodView):
    @requires("job:cancel")
    @blp.response(200, JobSummarySchema)
    @answers(409, "The job has already finished.")
    def post(self, job_id: uuid.UUID):
        """Cancel a job before its next step; a terminal job answers 409."""
        return jobs.cancel_job(sessions(), principal=current_principal(), job_id=job_id)
