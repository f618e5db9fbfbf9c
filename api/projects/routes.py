"""CRUD /projects."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.auth.schemas import MessageSchema
from api.common.schemas import page_request
from api.projects.schemas import (
    ProjectCreateSchema,
    ProjectListArgsSchema,
    ProjectListSchema,
    ProjectSchema,
    ProjectUpdateSchema,
)
from api.security import current_principal, requires, sessions
from orchestration import projects

blp = Blueprint("projects", __name__, url_prefix="/api/v1/projects", description="Projects")


@blp.route("")
class Projects(MethodView):
    @requires()
    @blp.arguments(ProjectListArgsSchema, location="query")
    @blp.response(200, ProjectListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's projects (filters: status, priority, search; sort)."""
        filters = projects.ProjectFilters(
            status=args.get("status"), priority=args.get("priority"), search=args.get("search")
        )
        page = projects.list_projects(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return page

    @requires("project:write")
    @blp.arguments(ProjectCreateSchema)
    @blp.response(201, ProjectSchema)
    def post(self, data: dict[str, Any]):
        """Create a project."""
        return projects.create_project(sessions(), principal=current_principal(), data=data)


@blp.route("/<uuid:project_id>")
class ProjectById(MethodView):
    @requires()
    @blp.response(200, ProjectSchema)
    def get(self, project_id: uuid.UUID):
        """A project with its creator and latest orchestration runs."""
        return projects.get_project(
            sessions(), principal=current_principal(), project_id=project_id
        )

    @requires("project:write")
    @blp.arguments(ProjectUpdateSchema)
    @blp.response(200, ProjectSchema)
    def put(self, changes: dict[str, Any], project_id: uuid.UUID):
        """Update some fields of a project (PATCH does the same)."""
        return projects.update_project(
            sessions(), principal=current_principal(), project_id=project_id, changes=changes
        )

    @requires("project:write")
    @blp.arguments(ProjectUpdateSchema)
    @blp.response(200, ProjectSchema)
    def patch(self, changes: dict[str, Any], project_id: uuid.UUID):
        """Seed 001 spelling of the update."""
        return projects.update_project(
            sessions(), principal=current_principal(), project_id=project_id, changes=changes
        )

    @requires("project:write")
    @blp.response(200, MessageSchema)
    def delete(self, project_id: uuid.UUID):
        """Delete a project; its agents and jobs stay, detached from it."""
        projects.delete_project(sessions(), principal=current_principal(), project_id=project_id)
        return {"message": "Project deleted successfully"}
