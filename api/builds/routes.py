"""Builds (seed 004): plan -> generate (one step per component, in parallel) -> test -> review."""

from __future__ import annotations

import uuid

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields

from api.builds.schemas import BuildCreateSchema, BuildSchema, present_build
from api.common.openapi import answers, job_submission
from api.common.schemas import list_envelope
from api.extensions import limiter
from api.jobs.schemas import AcceptedSchema, JobListArgsSchema, JobListSchema
from api.jobs.views import list_for, submission_from, submit
from api.ratelimits import build_limit
from api.security import current_principal, requires, sessions
from models import JobKind
from orchestration import jobs

blp = Blueprint("builds", __name__, url_prefix="/api/v1/builds", description="Build jobs")


# Seed 004: per user on build creation, one bucket for every route that creates a build
# (here and the seed 004 dialect's /api/build/), besides the user's bucket across all routes.
build_submissions = limiter.shared_limit(build_limit, scope="builds")


class BuildAcceptedSchema(AcceptedSchema):
    task_id = fields.UUID()


class CancelledSchema(Schema):
    message = fields.String()
    id = fields.UUID()
    status = fields.String()


@blp.route("")
class Builds(MethodView):
    @build_submissions
    @requires("job:create")
    @blp.arguments(BuildCreateSchema())  # one instance: not built per request
    @blp.response(202, BuildAcceptedSchema)
    @job_submission
    def post(self, data):
        """Create a build; answers 202 with ``task_id`` and a Location to poll."""
        submission = submission_from(
            data,
            kind=JobKind.BUILD,
            title=f"{data['project_name']}: {data['goal'][:160]}",
            job_input={
                "project_name": data["project_name"],
                "goal": data["goal"],
                "parameters": data["parameters"],
            },
        )
        return submit(
            submission, "builds.BuildById", "Build task created successfully", id_alias="task_id"
        )

    @requires("job:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args):
        """Build history, newest first."""
        return list_envelope(list_for(JobKind.BUILD, args))


@blp.route("/<uuid:job_id>")
class BuildById(MethodView):
    @requires("job:read")
    @blp.response(200, BuildSchema)
    def get(self, job_id: uuid.UUID):
        """Build status, progress, phases, results and error."""
        return present_build(
            jobs.get_job(
                sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.BUILD
            )
        )

    @requires("job:cancel")
    @blp.response(200, CancelledSchema)
    @answers(409, "The build has already finished.")
    def delete(self, job_id: uuid.UUID):
        """Cancel a build; completed, failed or cancelled builds answer 409."""
        job = jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.BUILD
        )
        return {"message": "Build task cancelled successfully", "id": job.id, "status": job.status}
