"""Seed 001's pull requests: /projects/{project_id}/pull-requests; approve and reject act
on GitHub as the project's GitHub App (``GITHUB_API_ERROR``, 502, when GitHub fails)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint
from marshmallow import Schema, fields, validate

from api.common.schemas import ListArgsSchema, page_request
from api.security import current_principal, requires, sessions
from orchestration import project_work

blp = Blueprint(
    "pull_requests",
    __name__,
    url_prefix="/api/v1/projects/<uuid:project_id>/pull-requests",
    description="A project's pull requests (seed 001)",
)

PR_STATUSES = ["open", "closed", "merged"]


class PullRequestListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf([*PR_STATUSES, "all"]))


class PullRequestRejectSchema(Schema):
    feedback = fields.String(required=True, validate=validate.Length(min=1, max=20_000))


class PullRequestSchema(Schema):
    id = fields.UUID()
    project_id = fields.UUID()
    number = fields.Integer()
    title = fields.String()
    body = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": PR_STATUSES})
    review_state = fields.String(allow_none=True)
    head_ref = fields.String(allow_none=True)
    head_sha = fields.String(allow_none=True)
    base_ref = fields.String(allow_none=True)
    author = fields.String(allow_none=True)
    html_url = fields.String(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class PullRequestListSchema(Schema):
    items = fields.List(fields.Nested(PullRequestSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


@blp.route("")
class PullRequests(MethodView):
    @requires("job:read")
    @blp.arguments(PullRequestListArgsSchema, location="query")
    @blp.response(200, PullRequestListSchema)
    def get(self, args: dict[str, Any], project_id: uuid.UUID):
        """The project's pull requests, newest first (``status`` filter)."""
        return project_work.list_pull_requests(
            sessions(), principal=current_principal(), project_id=project_id,
            status=args.get("status"), page=page_request(args),
        )  # fmt: skip


@blp.route("/<uuid:pull_request_id>/approve")
class PullRequestApprove(MethodView):
    @requires("project:write")
    @blp.response(200, PullRequestSchema)
    def post(self, project_id: uuid.UUID, pull_request_id: uuid.UUID):
        """Approve on GitHub, then merge (stays open, approved, when checks fail)."""
        return project_work.approve_pull_request(
            sessions(), principal=current_principal(), project_id=project_id,
            pull_request_id=pull_request_id,
        )  # fmt: skip


@blp.route("/<uuid:pull_request_id>/reject")
class PullRequestReject(MethodView):
    @requires("project:write")
    @blp.arguments(PullRequestRejectSchema)
    @blp.response(200, PullRequestSchema)
    def post(self, data: dict[str, Any], project_id: uuid.UUID, pull_request_id: uuid.UUID):
        """Request changes on GitHub with ``feedback``."""
        return project_work.reject_pull_request(
            sessions(), principal=current_principal(), project_id=project_id,
            pull_request_id=pull_request_id, feedback=data["feedback"],
        )  # fmt: skip
