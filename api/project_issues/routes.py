"""Seed 001's issues: /projects/{project_id}/issues (mirrored from GitHub's webhooks)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.common.schemas import ListArgsSchema, page_request
from api.project_tasks.schemas import ProjectTaskListSchema, present_task
from api.security import current_principal, requires, sessions
from orchestration import project_work

blp = Blueprint(
    "project_issues",
    __name__,
    url_prefix="/api/v1/projects/<uuid:project_id>/issues",
    description="A project's GitHub issues (seed 001)",
)


class ProjectIssueListArgsSchema(ListArgsSchema):
    state = fields.String(load_default="open", validate=validate.OneOf(["open", "closed", "all"]))
    label = fields.String(validate=validate.Length(min=1, max=100))


class ProjectIssueCommentSchema(Schema):
    id = fields.Integer()
    author = fields.String(allow_none=True)
    body = fields.String(allow_none=True)
    at = fields.String(allow_none=True)


class ProjectIssueSchema(Schema):
    id = fields.UUID()
    project_id = fields.UUID()
    number = fields.Integer()
    title = fields.String()
    body = fields.String(allow_none=True)
    state = fields.String(metadata={"enum": ["open", "closed"]})
    labels = fields.List(fields.String())
    author = fields.String(allow_none=True)
    html_url = fields.String(allow_none=True)
    comments = fields.List(fields.Nested(ProjectIssueCommentSchema))
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ProjectIssueListSchema(Schema):
    items = fields.List(fields.Nested(ProjectIssueSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


@blp.route("")
class ProjectIssues(MethodView):
    @requires("job:read")
    @blp.arguments(ProjectIssueListArgsSchema, location="query")
    @blp.response(200, ProjectIssueListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's issues, newest first (``state``: open|closed|all; ``label``)."""
        return project_work.list_issues(
            sessions(), principal=current_principal(), project_id=project_id,
            state=args["state"], label=args.get("label"), page=page_request(args),
        )  # fmt: skip


@blp.route("/<uuid:issue_id>/start")
class ProjectIssueStart(MethodView):
    @requires("project:write")
    @blp.response(201, ProjectTaskListSchema)
    def post(self, project_id: uuid.UUID, issue_id: uuid.UUID):
        """Turn the issue into tasks for the project's agents by role (architect, coder,
        tester, reviewer), each started as a job; answers the tasks (409 when started)."""
        views = project_work.start_issue(
            sessions(), principal=current_principal(), project_id=project_id, issue_id=issue_id
        )
        items = [present_task(v) for v in views]
        return {"items": items, "total": len(items), "limit": len(items), "offset": 0}


@blp.route("/<uuid:issue_id>/tasks")
class ProjectIssueTasks(MethodView):
    @requires("job:read")
    @blp.arguments(ListArgsSchema, location="query")
    @blp.response(200, ProjectTaskListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID, issue_id: uuid.UUID):
        """Tasks made from the issue."""
        page = project_work.issue_tasks(
            sessions(), principal=current_principal(), project_id=project_id,
            issue_id=issue_id, page=page_request(args),
        )  # fmt: skip
        page.items = [present_task(v) for v in page.items]
        return page
