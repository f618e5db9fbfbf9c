"""Auth payloads: register, login (email or username), refresh, logout, the token answer."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, post_load, validate, validates_schema

# Generous but bounded: argon2 hashes any length, an attacker should not get to choose it.
PASSWORD = validate.Length(min=8, max=1024)
USERNAME = validate.Regexp(
    r"^[A-Za-z0-9_.-]{3,80}$", error="3-80 characters: letters, digits, '_', '.', '-'"
)


class RegisterSchema(Schema):
    """Seed 002 ``tenant_name`` and seed 003 ``organization_name`` are the same thing."""

    email = fields.Email(required=True, validate=validate.Length(max=320))
    password = fields.String(required=True, load_only=True, validate=PASSWORD)
    full_name = fields.String(validate=validate.Length(min=1, max=200))
    username = fields.String(validate=USERNAME)
    organization_name = fields.String(validate=validate.Length(min=1, max=200))
    tenant_name = fields.String(validate=validate.Length(min=1, max=200))

    @validates_schema(skip_on_field_errors=False)
    def _needs_organization(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("organization_name") and not data.get("tenant_name"):
            raise ValidationError(
                "organization_name (or tenant_name) is required", "organization_name"
            )

    @post_load
    def _one_name(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        tenant = data.pop("tenant_name", None)
        data["organization_name"] = data.get("organization_name") or tenant
        return data


class LoginSchema(Schema):
    email = fields.String(validate=validate.Length(min=1, max=320))
    username = fields.String(validate=validate.Length(min=1, max=320))
    password = fields.String(
        required=True, load_only=True, validate=validate.Length(min=1, max=1024)
    )

    @validates_schema(skip_on_field_errors=False)
    def _email_or_username(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("email") and not data.get("username"):
            raise ValidationError("email or username is required", "email")


class RefreshSchema(Schema):
    refresh_token = fields.String(required=True, validate=validate.Length(min=1, max=4096))


class LogoutSchema(Schema):
    refresh_token = fields.String(validate=validate.Length(min=1, max=4096))


class SignedInUserSchema(Schema):
    id = fields.UUID()
    email = fields.String()
    username = fields.String(allow_none=True)
    full_name = fields.String(allow_none=True)
    organization_id = fields.UUID()
    role = fields.String()


class TokenSchema(Schema):
    """Tokens; or, when a second factor is needed, ``requires_2fa`` and a ``temp_token``
    (``expires_in`` is then the temp_token's lifetime) and no tokens."""

    access_token = fields.String()
    refresh_token = fields.String()
    token_type = fields.String()
    expires_in = fields.Integer()
    requires_2fa = fields.Boolean()
    requires_2fa_setup = fields.Boolean()
    temp_token = fields.String()
    user = fields.Nested(SignedInUserSchema)


class MessageSchema(Schema):
    message = fields.String()


# -- two-factor sign-in (seeds 001, 003) ---------------------------------------------------
TEMP_TOKEN = fields.String(validate=validate.Length(min=1, max=4096))
TOTP_CODE = fields.String(validate=validate.Length(min=1, max=16))
RECOVERY_CODE = fields.String(validate=validate.Length(min=1, max=64))


def _one_factor(data: dict[str, Any]) -> None:
    if ("code" in data) == ("recovery_code" in data):
        raise ValidationError("give either code or recovery_code", "code")


class TwoFactorVerifySchema(Schema):
    temp_token = fields.String(required=True, validate=validate.Length(min=1, max=4096))
    code = TOTP_CODE
    recovery_code = RECOVERY_CODE

    @validates_schema(skip_on_field_errors=False)
    def _factor(self, data: dict[str, Any], **_: Any) -> None:
        _one_factor(data)


class TwoFactorSetupSchema(Schema):
    # Only when sign-in answered requires_2fa_setup; otherwise the bearer token is used.
    temp_token = TEMP_TOKEN


class TwoFactorSetupAnswerSchema(Schema):
    secret = fields.String()
    provisioning_uri = fields.String()
    issuer = fields.String()


class TwoFactorEnableSchema(Schema):
    code = fields.String(required=True, validate=validate.Length(min=1, max=16))
    temp_token = TEMP_TOKEN


class TwoFactorEnabledSchema(TokenSchema):
    """The recovery codes are shown here only; with a temp_token, the sign-in's tokens too."""

    enabled = fields.Boolean()
    recovery_codes = fields.List(fields.String())


class TwoFactorDisableSchema(Schema):
    code = TOTP_CODE
    recovery_code = RECOVERY_CODE

    @validates_schema(skip_on_field_errors=False)
    def _factor(self, data: dict[str, Any], **_: Any) -> None:
        _one_factor(data)
