"""Seed 001's task board: /projects/{project_id}/tasks."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.schemas import page_request
from api.project_tasks.schemas import (
    ProjectTaskAssignSchema,
    ProjectTaskCreateSchema,
    ProjectTaskListArgsSchema,
    ProjectTaskListSchema,
    ProjectTaskSchema,
    present_task,
)
from api.security import current_principal, requires, sessions
from orchestration import project_work

blp = Blueprint(
    "project_tasks",
    __name__,
    url_prefix="/api/v1/projects/<uuid:project_id>/tasks",
    description="A project's task board (seed 001)",
)


@blp.route("")
class ProjectTasks(MethodView):
    @requires("job:read")
    @blp.arguments(ProjectTaskListArgsSchema, location="query")
    @blp.response(200, ProjectTaskListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """Tasks of the project, oldest first (filters: status, assigned_to, issue_id)."""
        page = project_work.list_tasks(
            sessions(), principal=current_principal(), project_id=project_id,
            status=args.get("status"), assigned_to=args.get("assigned_to"),
            issue_id=args.get("issue_id"), page=page_request(args),
        )  # fmt: skip
        page.items = [present_task(v) for v in page.items]
        return page

    @requires("project:write")
    @blp.arguments(ProjectTaskCreateSchema)
    @blp.response(201, ProjectTaskSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID):
        """Create a task; with ``assigned_to_agent_id`` the agent starts on it at once
        (409 ``AGENT_BUSY`` when it is already working)."""
        view = project_work.create_task(
            sessions(), principal=current_principal(), project_id=project_id, data=data
        )
        return present_task(view)


@blp.route("/<uuid:task_id>")
class ProjectTaskById(MethodView):
    @requires("job:read")
    @blp.response(200, ProjectTaskSchema)
    def get(self, project_id: uuid.UUID, task_id: uuid.UUID):
        """One task with its agent, issue, pull request and progress."""
        view = project_work.get_task(
            sessions(), principal=current_principal(), project_id=project_id, task_id=task_id
        )
        return present_task(view)


@blp.route("/<uuid:task_id>/assign")
class ProjectTaskAssign(MethodView):
    @requires("project:write")
    @blp.arguments(ProjectTaskAssignSchema)
    @blp.response(200, ProjectTaskSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID, task_id: uuid.UUID):
        """Give the task to an agent, who starts on it (409 ``AGENT_BUSY`` when working)."""
        view = project_work.assign_task(
            sessions(), principal=current_principal(), project_id=project_id,
            task_id=task_id, agent_id=data["agent_id"],
        )  # fmt: skip
        return present_task(view)


@blp.route("/<uuid:task_id>/complete")
class ProjectTaskComplete(MethodView):
    @requires("project:write")
    @blp.response(200, ProjectTaskSchema)
    def post(self, project_id: uuid.UUID, task_id: uuid.UUID):
        """Mark the task done (409 while its agent is still working)."""
        view = project_work.complete_task(
            sessions(), principal=current_principal(), project_id=project_id, task_id=task_id
        )
        return present_task(view)
