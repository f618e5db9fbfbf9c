"""Projects (seed 003 fields; seed 001 PATCH accepted as an alias of PUT)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate
from webargs.fields import DelimitedList

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema, Money
from orchestration.projects import PRIORITIES, STATUSES, ProjectView

GITHUB_REPO = r"^[A-Za-z0-9][A-Za-z0-9-]{0,38}/[A-Za-z0-9._-]{1,100}$"
GITHUB_ID = validate.Regexp(r"^[0-9]{1,20}$", error="must be GitHub's numeric id")


class UserRefSchema(Schema):
    id = fields.UUID()
    username = fields.String(allow_none=True)
    full_name = fields.String(allow_none=True)


class RunRefSchema(Schema):
    id = fields.UUID()
    status = fields.String()
    progress = fields.Integer()
    created_at = fields.DateTime()


class ProjectStatsSchema(Schema):
    """Seed 001 ``stats``: today's (UTC) spend from the ledger."""

    today_cost = Money()
    calls_today = fields.Integer()
    tokens_today = fields.Integer()
    open_issues = fields.Integer()
    active_conversations = fields.Integer()


class ProjectSchema(Schema):
    id = fields.UUID()
    organization_id = fields.UUID()
    name = fields.String()
    description = fields.String(allow_none=True)
    topic = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": STATUSES})
    priority = fields.String(metadata={"enum": PRIORITIES})
    metadata = fields.Dict()
    github_repo = fields.String(allow_none=True)
    github_app_id = fields.String(allow_none=True)
    github_installation_id = fields.String(allow_none=True)
    created_by = fields.Nested(UserRefSchema, allow_none=True)
    orchestration_runs = fields.List(fields.Nested(RunRefSchema))
    stats = fields.Nested(ProjectStatsSchema)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: ProjectView, **_: Any) -> dict[str, Any]:
        p = view.project
        return {
            "id": p.id,
            "organization_id": p.organization_id,
            "name": p.name,
            "description": p.description,
            "topic": p.topic,
            "status": p.status,
            "priority": p.priority,
            "metadata": p.metadata_ or {},
            "github_repo": p.github_repo,
            "github_app_id": p.github_app_id,
            "github_installation_id": p.github_installation_id,
            "created_by": view.created_by,
            "orchestration_runs": view.runs,
            "stats": {
                "today_cost": view.today.cost,
                "calls_today": view.today.calls,
                "tokens_today": view.today.total_tokens,
                "open_issues": view.open_issues,
                "active_conversations": view.active_conversations,
            },
            "created_at": p.created_at,
            "updated_at": p.updated_at,
        }


class ProjectUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    topic = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    status = fields.String(validate=validate.OneOf(STATUSES))
    priority = fields.String(validate=validate.OneOf(PRIORITIES))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))
    # Seed 001: the GitHub repository and the GitHub App installation Baton acts as.
    github_repo = fields.String(
        allow_none=True, validate=validate.Regexp(GITHUB_REPO, error="must be owner/repo")
    )
    github_app_id = fields.String(allow_none=True, validate=GITHUB_ID)
    github_installation_id = fields.String(allow_none=True, validate=GITHUB_ID)


class ProjectCreateSchema(ProjectUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))


class ProjectListArgsSchema(ListArgsSchema):
    # ``?status=active,completed`` (seed 003 multiple values).
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUSES)))
    priority = DelimitedList(fields.String(validate=validate.OneOf(PRIORITIES)))
    search = fields.String(validate=validate.Length(min=1, max=200))


class ProjectListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(ProjectSchema))
