"""Agents: seed 000 nests settings under ``config``; seed 001 sends them at top level;
seed 002 names them ``instructions``, ``provider``, ``model``, ``temperature``, ``tools``.

All are accepted and stored in one shape: top-level keys are folded into ``config`` on
load (seed 002's onto the config keys they mean: ``instructions`` is ``system_prompt``,
``model``/``temperature`` go under ``model_config``, ``provider`` heads ``providers``).
"""

from __future__ import annotations

from typing import Any

from marshmallow import (
    Schema,
    ValidationError,
    fields,
    post_load,
    pre_dump,
    validate,
    validates_schema,
)
from webargs.fields import DelimitedList

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema, Money
from orchestration.agents import STATUSES, AgentView
from orchestration.tools import TOOL_NAMES


def _unique(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("must not repeat a provider")


class ModelConfigSchema(Schema):
    model = fields.String(validate=validate.Length(min=1, max=120))
    temperature = fields.Float(validate=validate.Range(min=0, max=2))
    max_tokens = fields.Integer(strict=True, validate=validate.Range(min=1, max=200_000))
    top_p = fields.Float(validate=validate.Range(min=0, max=1))


class _ConfigFields(Schema):
    providers = fields.List(
        fields.String(validate=validate.Length(min=1, max=60)),
        validate=[validate.Length(min=1, max=10), _unique],
    )
    model_preferences = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=60)),
        values=fields.String(validate=validate.Length(min=1, max=120)),
    )
    # provider -> model used on it when the step falls back to it (seed 000: openai -> groq)
    fallback_models = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1, max=60)),
        values=fields.String(validate=validate.Length(min=1, max=120)),
    )
    stream = fields.Boolean()
    max_retries = fields.Integer(strict=True, validate=validate.Range(min=0, max=10))
    timeout_seconds = fields.Integer(strict=True, validate=validate.Range(min=1, max=600))
    model_config = fields.Nested(ModelConfigSchema)
    system_prompt = fields.String(allow_none=True, validate=validate.Length(max=50_000))
    rules_file_path = fields.String(allow_none=True, validate=validate.Length(max=500))
    tools = fields.List(
        fields.String(validate=validate.OneOf(TOOL_NAMES, error="unknown tool; known: {choices}")),
        validate=validate.Length(max=len(TOOL_NAMES)),
    )
    # "model" (default) calls a provider; "external" submits to a task server (seed 000)
    executor = fields.String(validate=validate.OneOf(["model", "external"]))
    task_server = fields.String(validate=validate.Length(min=1, max=60))


CONFIG_KEYS = tuple(_ConfigFields._declared_fields)


class AgentConfigSchema(_ConfigFields):
    pass


# Seed 002's names -> where they live in the stored config.
SEED_002_KEYS = {
    "instructions": "system_prompt",
    "provider": "providers",
    "model": "model_config.model",
    "temperature": "model_config.temperature",
}


class AgentUpdateSchema(_ConfigFields):
    name = fields.String(validate=validate.Length(min=1, max=200))
    type = fields.String(validate=validate.Length(min=1, max=60))
    project_id = fields.UUID(allow_none=True)
    status = fields.String(validate=validate.OneOf(STATUSES))
    config = fields.Nested(AgentConfigSchema)
    description = fields.String(allow_none=True, validate=validate.Length(max=5000))
    metadata = fields.Dict(keys=fields.String(validate=validate.Length(max=100)))
    instructions = fields.String(allow_none=True, validate=validate.Length(max=50_000))
    provider = fields.String(validate=validate.Length(min=1, max=60))
    model = fields.String(validate=validate.Length(min=1, max=120))
    temperature = fields.Float(validate=validate.Range(min=0, max=2))

    @validates_schema
    def _not_twice(self, data: dict[str, Any], **_: Any) -> None:
        nested = data.get("config") or {}
        for key in CONFIG_KEYS:
            if key in data and key in nested:
                raise ValidationError("given both at top level and in config", key)
        model_config = {**(nested.get("model_config") or {}), **(data.get("model_config") or {})}
        system_prompt = "system_prompt" in data or "system_prompt" in nested
        for key, target in SEED_002_KEYS.items():
            if key not in data:
                continue
            if target.startswith("model_config.") and target.split(".")[1] in model_config:
                raise ValidationError(f"given both as '{key}' and in {target}", key)
            if key == "instructions" and system_prompt:
                raise ValidationError("given both as 'instructions' and system_prompt", key)
        providers = data.get("providers") or nested.get("providers")
        if "provider" in data and providers and providers[0] != data["provider"]:
            raise ValidationError("must be the first of providers when both are given", "provider")

    @post_load
    def _fold_config(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        top_level = {key: data.pop(key) for key in CONFIG_KEYS if key in data}
        if "instructions" in data:
            top_level["system_prompt"] = data.pop("instructions")
        model_config = {k: data.pop(k) for k in ("model", "temperature") if k in data}
        if model_config:
            nested = (data.get("config") or {}).get("model_config") or {}
            top_level["model_config"] = {
                **nested,
                **(top_level.get("model_config") or {}),
                **model_config,
            }
        if "provider" in data:
            provider = data.pop("provider")
            given = top_level.get("providers") or (data.get("config") or {}).get("providers")
            top_level["providers"] = given or [provider]
        if top_level:
            data["config"] = {**(data.get("config") or {}), **top_level}
        return data


class AgentCreateSchema(AgentUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    type = fields.String(load_default="general", validate=validate.Length(min=1, max=60))


class AgentStatsSchema(Schema):
    """Seed 001 ``stats``: today's (UTC) provider calls and spend from the ledger."""

    messages_today = fields.Integer()
    cost_today = Money()
    tokens_today = fields.Integer()


class AgentSchema(Schema):
    id = fields.UUID()
    organization_id = fields.UUID()
    project_id = fields.UUID(allow_none=True)
    name = fields.String()
    type = fields.String()
    status = fields.String(metadata={"enum": STATUSES})
    is_active = fields.Boolean()
    config = fields.Dict()
    # Seed 002's view of the same config.
    description = fields.String(allow_none=True)
    instructions = fields.String(allow_none=True)
    provider = fields.String(allow_none=True)
    model = fields.String(allow_none=True)
    temperature = fields.Float(allow_none=True)
    tools = fields.List(fields.String())
    metadata = fields.Dict()
    stats = fields.Nested(AgentStatsSchema)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: AgentView, **_: Any) -> dict[str, Any]:
        agent = view.agent
        config = agent.config or {}
        model_config = config.get("model_config") or {}
        return {
            "id": agent.id,
            "organization_id": agent.organization_id,
            "project_id": agent.project_id,
            "name": agent.name,
            "type": agent.type,
            "status": agent.status,
            "is_active": agent.status == "active",
            "config": agent.config,
            "description": agent.description,
            "instructions": config.get("system_prompt"),
            "provider": (config.get("providers") or [None])[0],
            "model": model_config.get("model"),
            "temperature": model_config.get("temperature"),
            "tools": list(config.get("tools") or []),
            "metadata": agent.meta or {},
            "stats": {
                "messages_today": view.today.calls,
                "cost_today": view.today.cost,
                "tokens_today": view.today.total_tokens,
            },
            "created_at": agent.created_at,
            "updated_at": agent.updated_at,
        }


class AgentListArgsSchema(ListArgsSchema):
    status = DelimitedList(fields.String(validate=validate.OneOf(STATUSES)))
    project_id = fields.UUID()
    type = fields.String(validate=validate.Length(min=1, max=60))


class AgentListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(AgentSchema))
