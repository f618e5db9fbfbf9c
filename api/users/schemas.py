"""Users: the caller's profile and admin-managed members of the organization."""

from __future__ import annotations

from marshmallow import Schema, fields, validate

from api.auth.schemas import PASSWORD, USERNAME
from api.common.schemas import ListArgsSchema, ListEnvelopeSchema
from models import Role

ROLES = [r.value for r in Role]


class UserSchema(Schema):
    id = fields.UUID()
    email = fields.String()
    username = fields.String(allow_none=True)
    full_name = fields.String(allow_none=True)
    role = fields.String(metadata={"enum": ROLES})
    organization_id = fields.UUID()
    is_active = fields.Boolean()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


class UserUpdateSchema(Schema):
    """PUT /users/me: every field optional; role and organization are not the user's to set."""

    email = fields.Email(validate=validate.Length(max=320))
    password = fields.String(load_only=True, validate=PASSWORD)
    full_name = fields.String(allow_none=True, validate=validate.Length(min=1, max=200))
    username = fields.String(allow_none=True, validate=USERNAME)


class UserCreateSchema(Schema):
    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    role = fields.String(load_default=Role.MEMBER.value, validate=validate.OneOf(ROLES))
    full_name = fields.String(validate=validate.Length(min=1, max=200))
    username = fields.String(validate=USERNAME)


class UserListArgsSchema(ListArgsSchema):
    role = fields.String(validate=validate.OneOf(ROLES))


class UserListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(UserSchema))
