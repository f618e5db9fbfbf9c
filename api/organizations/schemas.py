"""The caller's organization (seed 003 /organizations/current)."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate


class OrganizationSchema(Schema):
    id = fields.UUID()
    name = fields.String()
    slug = fields.String()
    subscription_tier = fields.String()
    # Seed 003: API calls per calendar month (UTC); null is unlimited.
    api_quota_limit = fields.Integer(allow_none=True)
    api_quota_used = fields.Integer()
    require_2fa = fields.Boolean()
    settings = fields.Dict()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()

    @pre_dump
    def _flatten(self, state: Any, **_: Any) -> dict[str, Any]:
        """An ``accounts.OrganizationState``: the row's fields plus this month's usage."""
        org = state.organization
        fields_of_row = set(self.fields) - {"api_quota_used"}
        return {
            **{name: getattr(org, name) for name in fields_of_row},
            "api_quota_used": state.api_quota_used,
        }


class OrganizationUpdateSchema(Schema):
    name = fields.String(validate=validate.Length(min=1, max=200))
    # Merged into the stored settings; a null value removes the key.
    settings = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=100)))
    # Every user must sign in with a second factor (see docs/decisions.md, issue 9).
    require_2fa = fields.Boolean()
