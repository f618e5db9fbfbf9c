"""Seed 002's bodies. Requests reuse the canonical schemas where the canonical API already
takes seed 002's fields (register, login, tasks, agents, messages, webhooks): one
validation. Money is a JSON number here, as the document shows it (``"cost": 0.00261``)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, pre_dump, validate, validates_schema
from webargs.fields import DelimitedList

from api.auth.schemas import LoginSchema, RegisterSchema
from api.compat.core import LimitOffsetArgsSchema, page_meta
from api.compat.task_assistant import PRIORITY_WORDS, STATUS_WORDS
from api.webhooks.schemas import WebhookCreateSchema
from models import ConversationMessage
from orchestration.jobs import JobDetail
from orchestration.listing import MAX_LIMIT

STATUS = fields.String(metadata={"enum": STATUS_WORDS.enum()})
PRIORITY = fields.String(metadata={"enum": sorted(set(PRIORITY_WORDS.values()))})


def _z(value: str | None) -> str | None:
    return value.replace("+00:00", "Z") if isinstance(value, str) else value


# -- auth -----------------------------------------------------------------------------------

# marshmallow's own "required" message: the dialect's errors read it as pydantic's
# ``field required`` / ``value_error.missing``.
_REQUIRED = "Missing data for required field."


class TaRegisterSchema(RegisterSchema):
    """The canonical sign-up; a missing tenant is named by the document's ``tenant_name``
    (not Baton's ``organization_name``, which is still accepted)."""

    @validates_schema(skip_on_field_errors=False)
    def _needs_organization(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("organization_name") and not data.get("tenant_name"):
            raise ValidationError(_REQUIRED, "tenant_name")


class TaLoginSchema(LoginSchema):
    """The canonical login; the document's login is by ``email``, so a missing one is
    ``email: field required`` (a ``username`` is still accepted)."""

    @validates_schema(skip_on_field_errors=False)
    def _email_or_username(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("email") and not data.get("username"):
            raise ValidationError(_REQUIRED, "email")


class TaUserSchema(Schema):
    id = fields.UUID(required=True)
    email = fields.String(required=True)
    full_name = fields.String(allow_none=True)
    role = fields.String()
    tenant_id = fields.UUID()
    created_at = fields.DateTime()

    @pre_dump
    def _from_user(self, user: Any, **_: Any) -> dict[str, Any]:
        return {
            "id": user.id,
            "email": user.email,
            "full_name": user.full_name,
            "role": user.role,
            "tenant_id": user.organization_id,
            "created_at": user.created_at,
        }


class TaTokenSchema(Schema):
    access_token = fields.String(required=True)
    token_type = fields.String(required=True)
    expires_in = fields.Integer(required=True)


class NoBodySchema(Schema):
    """``POST /auth/refresh`` takes its token from the Authorization header only."""


# -- tasks ----------------------------------------------------------------------------------


class TaTaskRowSchema(Schema):
    """A task in a list (the document's list items carry no ``result``)."""

    id = fields.UUID(required=True)
    title = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    status = STATUS
    priority = PRIORITY
    due_date = fields.String(allow_none=True, metadata={"format": "date-time"})
    metadata = fields.Dict()
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


class TaTaskSchema(TaTaskRowSchema):
    result = fields.Dict(allow_none=True)


class TaTaskListSchema(Schema):
    items = fields.List(fields.Nested(TaTaskRowSchema), required=True)
    total = fields.Integer(required=True)
    limit = fields.Integer(required=True)
    offset = fields.Integer(required=True)

    @pre_dump
    def _page(self, page: Any, **_: Any) -> dict[str, Any]:
        return {**page_meta(page), "items": page.items}


class TaTaskListArgsSchema(LimitOffsetArgsSchema):
    """The document's filters; ``limit`` defaults to 50 (max 100)."""

    limit = fields.Integer(load_default=50, validate=validate.Range(min=1, max=MAX_LIMIT))
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUS_WORDS.enum())))
    priority = DelimitedList(fields.String(validate=validate.OneOf(("low", "medium", "high"))))


def present_task(detail: JobDetail) -> dict[str, Any]:
    job, inp = detail.job, detail.job.input or {}
    return {
        "id": job.id,
        "title": inp.get("title") or job.title,
        "description": inp.get("description"),
        "status": STATUS_WORDS.word(job.status),
        "priority": PRIORITY_WORDS.get(job.priority, job.priority),
        "due_date": _z(inp.get("due_date")),
        "result": job.result,
        "metadata": inp.get("metadata") or {},
        "created_at": job.created_at,
        "completed_at": job.finished_at if job.status == "completed" else None,
    }


# -- chat -----------------------------------------------------------------------------------


class TaConversationCreateSchema(Schema):
    title = fields.String(validate=validate.Length(min=1, max=300))
    provider = fields.String(validate=validate.Length(min=1, max=60))
    model = fields.String(validate=validate.Length(min=1, max=120))
    system_prompt = fields.String(validate=validate.Length(max=50_000))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))


class TaConversationSchema(Schema):
    id = fields.UUID(required=True)
    title = fields.String()
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    system_prompt = fields.String(allow_none=True)
    metadata = fields.Dict()
    created_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: Any, **_: Any) -> dict[str, Any]:
        conversation = view.conversation
        config = view.agents[0].config if view.agents else {}
        return {
            "id": conversation.id,
            "title": conversation.title,
            "provider": (config.get("providers") or [None])[0],
            "model": (config.get("model_config") or {}).get("model"),
            "system_prompt": config.get("system_prompt"),
            "metadata": conversation.meta or {},
            "created_at": conversation.created_at,
        }


class TaMessageSchema(Schema):
    id = fields.UUID(required=True)
    conversation_id = fields.UUID()
    role = fields.String()
    content = fields.String()
    status = fields.String(metadata={"description": "The reply's: completed, failed, pending."})
    error = fields.String(allow_none=True)
    tokens_used = fields.Integer()
    cost = fields.Float()
    created_at = fields.DateTime()

    @pre_dump
    def _from_row(self, m: ConversationMessage, **_: Any) -> dict[str, Any]:
        return {
            "id": m.id,
            "conversation_id": m.conversation_id,
            "role": m.role,
            "content": m.content,
            "status": m.status,
            "error": m.error,
            "tokens_used": m.tokens_in + m.tokens_out,
            "cost": float(m.cost),
            "created_at": m.created_at,
        }


# -- agents ---------------------------------------------------------------------------------


class TaAgentSchema(Schema):
    id = fields.UUID(required=True)
    name = fields.String()
    description = fields.String(allow_none=True)
    instructions = fields.String(allow_none=True)
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    temperature = fields.Float(allow_none=True)
    tools = fields.List(fields.String())
    metadata = fields.Dict()
    is_active = fields.Boolean()
    created_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: Any, **_: Any) -> dict[str, Any]:
        agent = view.agent
        config = agent.config or {}
        model_config = config.get("model_config") or {}
        return {
            "id": agent.id,
            "name": agent.name,
            "description": agent.description,
            "instructions": config.get("system_prompt"),
            "provider": (config.get("providers") or [None])[0],
            "model": model_config.get("model"),
            "temperature": model_config.get("temperature"),
            "tools": list(config.get("tools") or []),
            "metadata": agent.meta or {},
            "is_active": agent.status == "active",
            "created_at": agent.created_at,
        }


class TaRunSchema(Schema):
    run_id = fields.UUID(required=True)
    status = STATUS
    output = fields.String(allow_none=True)
    error = fields.String(allow_none=True)
    tokens_used = fields.Integer()
    cost = fields.Float()
    execution_time_ms = fields.Integer(allow_none=True)
    tools_used = fields.List(fields.String())
    created_at = fields.DateTime()
    completed_at = fields.DateTime(allow_none=True)


def present_run(run: dict[str, Any]) -> dict[str, Any]:
    """The canonical run (api.agent_runs.schemas.present_run) in the document's words."""
    return {
        **run,
        "status": STATUS_WORDS.word(run["status"]),
        "cost": float(run["cost"]),
    }


# -- webhooks -------------------------------------------------------------------------------


class TaWebhookCreateSchema(WebhookCreateSchema):
    """The canonical subscription body; the document's own example secret
    (``my_secret_key``, 13 characters) is shorter than Baton's 16: 8 is the floor here."""

    secret = fields.String(load_only=True, validate=validate.Length(min=8, max=200))


class TaWebhookSchema(Schema):
    id = fields.UUID(required=True)
    url = fields.String()
    event_types = fields.List(fields.String())
    description = fields.String(allow_none=True)
    is_active = fields.Boolean()
    created_at = fields.DateTime()
    # Only when Baton made the secret (none was sent): shown this once.
    secret = fields.String()
