"""Integrations: an organization's provider servers and keys. ``api_key`` is write-only:
a response says whether one is set (``api_key_set``), never the key or any part of it."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema

MODEL_NAME = validate.Length(min=1, max=120)


class PriceSchema(Schema):
    """USD per 1M tokens."""

    input = fields.Decimal(required=True, validate=validate.Range(min=0), as_string=True)
    output = fields.Decimal(required=True, validate=validate.Range(min=0), as_string=True)


def _unique(values: list[str]) -> None:
    if len(set(values)) != len(values):
        raise ValidationError("must not repeat a model")


class IntegrationUpdateSchema(Schema):
    base_url = fields.Url(
        schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=500)
    )
    api_key = fields.String(
        load_only=True, allow_none=True, validate=validate.Length(min=1, max=1000)
    )
    models = fields.List(
        fields.String(validate=MODEL_NAME), validate=[validate.Length(min=1, max=100), _unique]
    )
    timeout_seconds = fields.Float(validate=validate.Range(min=1, max=600))
    prices = fields.Dict(keys=fields.String(validate=MODEL_NAME), values=fields.Nested(PriceSchema))
    max_tokens_param = fields.String(
        validate=validate.OneOf(["max_tokens", "max_completion_tokens"])
    )
    enabled = fields.Boolean()

    @validates_schema
    def _key_is_text(self, data: dict[str, Any], **_: Any) -> None:
        key = data.get("api_key")
        if key is not None and (key != key.strip() or any(c.isspace() for c in key)):
            raise ValidationError("must not contain whitespace", "api_key")


class IntegrationCreateSchema(IntegrationUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=60))
    # "task_server": an external executor (seed 000's Task Master), not a model provider.
    kind = fields.String(validate=validate.OneOf(["provider", "task_server"]))


class IntegrationSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    # "key" (own key for an operator provider) | "custom" (own server) | "task_server"
    kind = fields.String()
    base_url = fields.String(allow_none=True)
    models = fields.List(fields.String())
    timeout_seconds = fields.Float(allow_none=True)
    prices = fields.Dict()
    max_tokens_param = fields.String(allow_none=True)
    enabled = fields.Boolean()
    api_key_set = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class IntegrationListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(IntegrationSchema))


def present_integration(view: Any) -> dict[str, Any]:
    row = view.integration
    return {
        "id": row.id,
        "name": row.name,
        "kind": view.kind,
        "base_url": row.base_url,
        "models": list(row.models or []),
        "timeout_seconds": row.timeout_seconds,
        "prices": row.prices or {},
        "max_tokens_param": row.max_tokens_param,
        "enabled": row.enabled,
        "api_key_set": view.api_key_set,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


IntegrationListArgsSchema = ListArgsSchema
