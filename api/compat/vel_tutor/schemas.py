"""Seed 000's bodies. Requests reuse the canonical schemas where the fields are the same."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.auth.schemas import PASSWORD
from api.compat.core import LimitOffsetArgsSchema, page_meta
from api.compat.vel_tutor import ROLE_WORDS, STATUS_WORDS
from api.jobs.schemas import PRIORITIES, present_history
from models import Job
from orchestration.agents import AgentView
from orchestration.jobs import JobDetail

STATUS = fields.String(metadata={"enum": STATUS_WORDS.enum()})
ROLE = fields.String(metadata={"enum": ["admin", "user"]})


class VelTutorMetaSchema(Schema):
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)


def data_meta(item_schema: type[Schema], name: str) -> type[Schema]:
    """The document's list envelope: ``{"data": [...], "meta": {total, limit, offset}}``."""

    def _page(self: Schema, page: Any, **_: Any) -> dict[str, Any]:
        return {"data": page.items, "meta": page_meta(page)}

    return Schema.from_dict(
        {
            "data": fields.List(fields.Nested(item_schema), required=True),
            "meta": fields.Nested(VelTutorMetaSchema, required=True),
            "_page": pre_dump(_page),
        },
        name=name,
    )


# -- auth -----------------------------------------------------------------------------------


class VelTutorLoginSchema(Schema):
    email = fields.String(required=True, validate=validate.Length(min=1, max=320))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=1, max=1024)
    )


class VelTutorUserBriefSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    role = ROLE


class VelTutorLoginAnswerSchema(Schema):
    user = fields.Nested(VelTutorUserBriefSchema, required=True)
    token = fields.String(required=True)
    expires_at = fields.DateTime(required=True)
    # Not in the document's example, which refresh needs: the login's refresh token.
    refresh_token = fields.String(required=True)


class VelTutorRefreshAnswerSchema(Schema):
    token = fields.String(required=True)
    expires_at = fields.DateTime(required=True)
    refresh_token = fields.String(required=True)  # rotated: the one sent is spent


# -- users ----------------------------------------------------------------------------------


class VelTutorUserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    role = ROLE
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _role(self, user: Any, **_: Any) -> dict[str, Any]:
        return {
            "id": user.id,
            "email": user.email,
            "role": ROLE_WORDS.get(user.role, "user"),
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }


class VelTutorUserUpdateSchema(Schema):
    email = fields.Email(validate=validate.Length(max=320))
    password = fields.String(load_only=True, validate=PASSWORD)


class VelTutorUserCreateSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    role = fields.String(load_default="user", validate=validate.OneOf(["admin", "user"]))


class VelTutorUserListArgsSchema(LimitOffsetArgsSchema):
    role = fields.String(validate=validate.OneOf(["admin", "user"]))


VelTutorUserListSchema = data_meta(VelTutorUserSchema, "VelTutorUserList")


# -- agents ---------------------------------------------------------------------------------


class VelTutorAgentSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String()
    type = fields.String()
    status = fields.String(metadata={"enum": ["active", "inactive", "paused"]})
    config = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _view(self, view: AgentView, **_: Any) -> dict[str, Any]:
        agent = view.agent
        return {
            "id": agent.id,
            "name": agent.name,
            "type": agent.type,
            "status": agent.status,
            "config": agent.config or {},
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
        }


class VelTutorAgentListArgsSchema(LimitOffsetArgsSchema):
    status = fields.String(validate=validate.OneOf(["active", "inactive"]))


VelTutorAgentListSchema = data_meta(VelTutorAgentSchema, "VelTutorAgentList")


class VelTutorAgentTestSchema(Schema):
    test_payload = fields.String(
        load_default="Hello, MCP Agent!", validate=validate.Length(min=1, max=20_000)
    )
    test_type = fields.String(load_default="simple_echo", validate=validate.Length(min=1, max=60))
    # Beyond the document: how long the dry run may hold the request (seconds).
    wait_seconds = fields.Float(load_default=30, validate=validate.Range(min=0, max=60))


class VelTutorAgentTestResultSchema(Schema):
    test_id = fields.UUID(required=True)
    status = STATUS
    result = fields.String()
    execution_time_ms = fields.Integer(allow_none=True)
    provider_used = fields.String(allow_none=True)


# -- tasks ----------------------------------------------------------------------------------


class VelTutorTaskListArgsSchema(LimitOffsetArgsSchema):
    status = fields.String(validate=validate.OneOf(STATUS_WORDS.enum()))
    agent_id = fields.UUID()


class VelTutorTaskSchema(Schema):
    id = fields.UUID(required=True)
    agent_id = fields.UUID(allow_none=True)
    description = fields.String(allow_none=True)
    status = STATUS
    priority = fields.String(metadata={"enum": PRIORITIES})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class VelTutorTaskResultSchema(Schema):
    output = fields.String(allow_none=True)
    execution_time_ms = fields.Integer(allow_none=True)
    provider_used = fields.String(allow_none=True)
    model = fields.String(allow_none=True)


class VelTutorHistorySchema(Schema):
    step = fields.String()
    timestamp = fields.DateTime()
    status = fields.String()
    provider = fields.String()


class VelTutorTaskDetailSchema(VelTutorTaskSchema):
    parameters = fields.Dict()
    result = fields.Nested(VelTutorTaskResultSchema, allow_none=True)
    history = fields.List(fields.Nested(VelTutorHistorySchema))
    error = fields.String(allow_none=True)


VelTutorTaskListSchema = data_meta(VelTutorTaskSchema, "VelTutorTaskList")


class VelTutorCancelledSchema(Schema):
    id = fields.UUID(required=True)
    status = STATUS
    updated_at = fields.DateTime()


class VelTutorHealthSchema(Schema):
    status = fields.String(required=True)
    timestamp = fields.DateTime(required=True)
    uptime = fields.String(required=True)
    version = fields.String(required=True)
    dependencies = fields.Dict(keys=fields.String(), values=fields.String(), required=True)


# -- presenters -----------------------------------------------------------------------------


def present_task(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "agent_id": job.agent_id,
        "description": (job.input or {}).get("description") or job.title,
        "status": STATUS_WORDS.word(job.status),
        "priority": job.priority,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
    }


def _history(detail: JobDetail) -> list[dict[str, Any]]:
    """Event rows as the document's steps: ``initialization`` (the job was accepted),
    each step by name, ``execution`` (the job as a whole)."""
    out = []
    for event in present_history(detail):
        noun, _, verb = event["type"].partition(".")
        if noun not in ("job", "step"):
            continue
        if noun == "job" and verb in ("pending", "queued"):
            step, status = "initialization", "started"
        elif noun == "job":
            step, status = "execution", {"running": "started"}.get(verb, verb)
        else:
            step, status = event["step"] or "execution", verb
        entry = {"step": step, "timestamp": event["timestamp"], "status": status}
        if event["data"].get("provider"):
            entry["provider"] = event["data"]["provider"]
        out.append(entry)
    return out


def present_task_detail(detail: JobDetail) -> dict[str, Any]:
    job = detail.job
    return {
        **present_task(job),
        "parameters": (job.input or {}).get("parameters") or {},
        "result": job.result,
        "history": _history(detail),
        "error": job.error,
    }
