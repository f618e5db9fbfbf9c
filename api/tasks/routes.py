"""Tasks (seeds 000/001/002): a one-phase job run by an agent."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import fields

from api.common.openapi import answers, job_submission
from api.common.schemas import list_envelope
from api.jobs.schemas import AcceptedSchema, JobListArgsSchema, JobListSchema, JobSummarySchema
from api.jobs.views import list_for, submission_from, submit
from api.security import current_principal, requires, sessions
from api.tasks.schemas import TaskCreateSchema, TaskSchema, present_task
from models import JobKind
from orchestration import jobs
from orchestration.jobs import JobSubmission

blp = Blueprint("tasks", __name__, url_prefix="/api/v1/tasks", description="Agent tasks")


class TaskAcceptedSchema(AcceptedSchema):
    task_id = fields.UUID()


def task_submission(data: dict[str, Any]) -> JobSubmission:
    """A TaskCreateSchema body as a job (the seed dialects' task creation too)."""
    job_input = {
        "title": data.get("title"),
        "description": data.get("description"),
        "parameters": data["parameters"],
        "metadata": data["metadata"],
        "due_date": data["due_date"].isoformat() if data.get("due_date") else None,
    }
    return submission_from(
        data,
        kind=JobKind.TASK,
        title=data.get("title") or data["description"][:200],
        job_input=job_input,
    )


@blp.route("")
class Tasks(MethodView):
    @requires("job:create")
    @blp.arguments(TaskCreateSchema())  # one instance: not built per request
    @blp.response(202, TaskAcceptedSchema)
    @job_submission
    def post(self, data):
        """Create a task and start it; answers 202 with the job id and a Location."""
        return submit(task_submission(data), "tasks.TaskById", "Task created", id_alias="task_id")

    @requires("job:read")
    @blp.arguments(JobListArgsSchema, location="query")
    @blp.response(200, JobListSchema)
    def get(self, args):
        """List tasks (filters: status, priority, agent_id, project_id)."""
        return list_envelope(list_for(JobKind.TASK, args))


@blp.route("/<uuid:job_id>")
class TaskById(MethodView):
    @requires("job:read")
    @blp.response(200, TaskSchema)
    def get(self, job_id: uuid.UUID):
        """Task details, result and execution history."""
        return present_task(
            jobs.get_job(
                sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.TASK
            )
        )


@blp.route("/<uuid:job_id>/cancel")
class TaskCancel(MethodView):
    @requires("job:cancel")
    @blp.response(200, JobSummarySchema)
    @answers(409, "The task has already finished.")
    def post(self, job_id: uuid.UUID):
        """Cancel a running task; a finished one answers 409."""
        return jobs.cancel_job(
            sessions(), principal=current_principal(), job_id=job_id, kind=JobKind.TASK
        )
