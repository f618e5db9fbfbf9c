"""The caller's organization (seed 003 /organizations/current)."""

from __future__ import annotations

from marshmallow import Schema, fields, validate


class OrganizationSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    slug = fields.String()
    subscription_tier = fields.String()
    settings = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class OrganizationUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    # Merged into the stored settings; a null value removes the key.
    settings = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))
