"""Phase templates (seed 003)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema
from api.projects.schemas import UserRefSchema
from orchestration.templates import TemplateView

PHASE_NAME = validate.Length(min=1, max=80)


class TemplateDataSchema(Schema):
    phases = fields.List(
        fields.String(validate=PHASE_NAME), required=True, validate=validate.Length(min=1, max=20)
    )
    settings = fields.Dict(keys=fields.String(), load_default=dict)
    integrations = fields.List(
        fields.String(validate=validate.Length(min=1, max=80)),
        load_default=list,
        validate=validate.Length(max=50),
    )


class TemplateUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=20_000))
    category = fields.String(validate=validate.Length(min=1, max=60))
    is_public = fields.Boolean()
    template_data = fields.Nested(TemplateDataSchema)


class TemplateCreateSchema(TemplateUpdateSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=200))
    template_data = fields.Nested(TemplateDataSchema, required=True)


class TemplateSchema(Schema):
    id = fields.UUID()
    organization_id = fields.UUID(allow_none=True)
    name = fields.String()
    description = fields.String(allow_none=True)
    category = fields.String()
    is_public = fields.Boolean()
    is_builtin = fields.Boolean()
    usage_count = fields.Integer()
    template_data = fields.Dict()
    created_by = fields.Nested(UserRefSchema, allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: TemplateView, **_: Any) -> dict[str, Any]:
        t = view.template
        return {
            "id": t.id,
            "organization_id": t.organization_id,
            "name": t.name,
            "description": t.description,
            "category": t.category,
            "is_public": t.is_public,
            "is_builtin": t.organization_id is None,
            "usage_count": t.usage_count,
            "template_data": t.template_data or {},
            "created_by": view.created_by,
            "created_at": t.created_at,
            "updated_at": t.updated_at,
        }


class TemplateListArgsSchema(ListArgsSchema):
    category = fields.String(validate=validate.Length(min=1, max=60))
    is_public = fields.Boolean()
    search = fields.String(validate=validate.Length(min=1, max=200))


class TemplateListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(TemplateSchema))
