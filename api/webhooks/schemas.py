"""Webhook subscriptions: seed 002's (``url``, ``event_types``, ``secret``,
``description``) and seed 003's (``name``, ``url``, ``events``, ``is_active``,
``secret_key``) payloads, one stored shape. The secret is returned only when it is set
(creation, rotation), never again."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, ValidationError, fields, validate, validates_schema

from api.common.schemas import ListArgsSchema

EVENT = fields.String(validate=validate.Length(min=1, max=60))
SECRET = fields.String(load_only=True, validate=validate.Length(min=16, max=200))


class WebhookUpdateSchema(Schema):
    name = fields.String(allow_none=True, validate=validate.Length(max=200))
    description = fields.String(allow_none=True, validate=validate.Length(max=2000))
    url = fields.Url(
        schemes={"http", "https"}, require_tld=False, validate=validate.Length(max=2000)
    )
    event_types = fields.List(EVENT, validate=validate.Length(max=50))
    events = fields.List(EVENT, validate=validate.Length(max=50))
    is_active = fields.Boolean()

    @validates_schema
    def _one_list(self, data: dict[str, Any], **_: Any) -> None:
        if "event_types" in data and "events" in data:
            raise ValidationError("give event_types or events, not both", "events")


class WebhookCreateSchema(WebhookUpdateSchema):
    url = fields.Url(
        required=True,
        schemes={"http", "https"},
        require_tld=False,
        validate=validate.Length(max=2000),
    )
    secret = SECRET
    secret_key = SECRET

    @validates_schema
    def _needs_events(self, data: dict[str, Any], **_: Any) -> None:
        if not data.get("event_types") and not data.get("events"):
            raise ValidationError("name at least one event type (or '*')", "event_types")
        if "secret" in data and "secret_key" in data:
            raise ValidationError("give secret or secret_key, not both", "secret")


class RotateSecretSchema(Schema):
    secret = SECRET
    grace_hours = fields.Float(validate=validate.Range(min=0, max=24 * 30))


class WebhookSchema(Schema):
    id = fields.UUID()
    name = fields.String(allow_none=True)
    description = fields.String(allow_none=True)
    url = fields.String()
    event_types = fields.List(fields.String())
    events = fields.List(fields.String())
    is_active = fields.Boolean()
    disabled_reason = fields.String(allow_none=True)
    consecutive_failures = fields.Integer()
    previous_secret_expires_at = fields.DateTime(allow_none=True)
    last_triggered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    # Only in the answer that sets it (create, rotate): store it, it is not shown again.
    secret = fields.String()


class WebhookListSchema(Schema):
    items = fields.List(fields.Nested(WebhookSchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


class AttemptSchema(Schema):
    attempt = fields.Integer()
    status_code = fields.Integer(allow_none=True)
    latency_ms = fields.Float()
    error = fields.String(allow_none=True)
    created_at = fields.DateTime()


class DeliverySchema(Schema):
    id = fields.UUID(metadata={"description": "the webhook-id header of every attempt"})
    event_type = fields.String()
    status = fields.String(metadata={"enum": ["pending", "sending", "delivered", "failed"]})
    attempts = fields.Integer()
    last_status_code = fields.Integer(allow_none=True)
    last_error = fields.String(allow_none=True)
    next_attempt_at = fields.DateTime()
    delivered_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()
    payload = fields.Dict()
    attempt_log = fields.List(fields.Nested(AttemptSchema))


class DeliveryListSchema(Schema):
    items = fields.List(fields.Nested(DeliverySchema))
    total = fields.Integer()
    limit = fields.Integer()
    offset = fields.Integer()


def present_webhook(view: Any) -> dict[str, Any]:
    row = view.subscription
    out = {
        "id": row.id,
        "name": row.name,
        "description": row.description,
        "url": row.url,
        "event_types": list(row.event_types or []),
        "events": list(row.event_types or []),
        "is_active": row.is_active,
        "disabled_reason": row.disabled_reason,
        "consecutive_failures": row.consecutive_failures,
        "previous_secret_expires_at": row.previous_secret_expires_at,
        "last_triggered_at": row.last_triggered_at,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }
    if view.secret is not None:
        out["secret"] = view.secret
    return out


def present_delivery(delivery: Any, attempts: list[Any]) -> dict[str, Any]:
    return {
        "id": delivery.id,
        "event_type": delivery.event_type,
        "status": delivery.status,
        "attempts": delivery.attempts,
        "last_status_code": delivery.last_status_code,
        "last_error": delivery.last_error,
        "next_attempt_at": delivery.next_attempt_at,
        "delivered_at": delivery.delivered_at,
        "created_at": delivery.created_at,
        "payload": delivery.payload,
        "attempt_log": attempts,
    }


WebhookListArgsSchema = ListArgsSchema
