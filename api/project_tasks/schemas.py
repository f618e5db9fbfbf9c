"""Seed 001's project tasks (``issue_id``, ``assigned_to_agent_id``,
``definition_of_done``; statuses pending|in_progress|testing|review|completed|failed)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, validate

from api.common.schemas import ListArgsSchema
from orchestration.project_work import TASK_STATUSES, TaskView
from orchestration.projects import PRIORITIES


class ProjectTaskCreateSchema(Schema):
    title = fields.String(required=True, validate=validate.Length(min=1, max=500))
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    priority = fields.String(load_default="medium", validate=validate.OneOf(PRIORITIES))
    issue_id = fields.UUID(allow_none=True)
    assigned_to_agent_id = fields.UUID(allow_none=True)
    definition_of_done = fields.String(allow_none=True, validate=validate.Length(max=20_000))


class ProjectTaskAssignSchema(Schema):
    agent_id = fields.UUID(required=True)


class ProjectTaskListArgsSchema(ListArgsSchema):
    status = fields.String(validate=validate.OneOf(TASK_STATUSES))
    assigned_to = fields.UUID()
    issue_id = fields.UUID()


class TaskAgentRefSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    type = fields.String()


class TaskIssueRefSchema(Schema):
    id = fields.UUID()
    number = fields.Integer()
    title = fields.String()


class TaskPullRequestRefSchema(Schema):
    id = fields.UUID()
    number = fields.Integer()
    status = fields.String()


class ProjectTaskSchema(Schema):
    id = fields.UUID()
    project_id = fields.UUID()
    title = fields.String()
    description = fields.String(allow_none=True)
    status = fields.String(metadata={"enum": list(TASK_STATUSES)})
    priority = fields.String(metadata={"enum": list(PRIORITIES)})
    issue_id = fields.UUID(allow_none=True)
    assigned_to_agent_id = fields.UUID(allow_none=True)
    assigned_to = fields.Nested(TaskAgentRefSchema, allow_none=True)
    issue = fields.Nested(TaskIssueRefSchema, allow_none=True)
    pr = fields.Nested(TaskPullRequestRefSchema, allow_none=True)
    job_id = fields.UUID(allow_none=True)
    definition_of_done = fields.String(allow_none=True)
    progress = fields.Integer()
    completed_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class ProjectTaskListSchema(Schema):
    items = fields.List(fields.Nested(ProjectTaskSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


def present_task(view: TaskView) -> dict[str, Any]:
    t = view.task
    return {
        "id": t.id,
        "project_id": t.project_id,
        "title": t.title,
        "description": t.description,
        "status": view.status,
        "priority": t.priority,
        "issue_id": t.issue_id,
        "assigned_to_agent_id": t.assigned_to_agent_id,
        "assigned_to": view.agent,
        "issue": view.issue,
        "pr": (
            {
                "id": view.pull_request.id,
                "number": view.pull_request.number,
                "status": view.pull_request.status,
            }
            if view.pull_request
            else None
        ),
        "job_id": t.job_id,
        "definition_of_done": t.definition_of_done,
        "progress": view.progress,
        "completed_at": t.completed_at,
        "created_at": t.created_at,
        "updated_at": t.updated_at,
    }
