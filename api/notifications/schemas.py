"""Notifications (seed 001): filters and the caller's view of one."""

from __future__ import annotations

from typing import Any

from marshmallow import Schema, fields, pre_dump, validate

from api.common.schemas import ListArgsSchema, ListEnvelopeSchema
from orchestration.notifications import SEVERITIES, NotificationView


class NotificationListArgsSchema(ListArgsSchema):
    is_read = fields.Boolean()
    severity = fields.String(validate=validate.OneOf(SEVERITIES))


class NotificationSchema(Schema):
    id = fields.UUID()
    type = fields.String()
    severity = fields.String()
    title = fields.String()
    message = fields.String()
    data = fields.Dict()
    user_id = fields.UUID(allow_none=True)
    is_read = fields.Boolean()
    read_at = fields.DateTime(allow_none=True)
    created_at = fields.DateTime()

    @pre_dump
    def _from_view(self, view: NotificationView, **_: Any) -> dict[str, Any]:
        note = view.notification
        return {
            "id": note.id,
            "type": note.type,
            "severity": note.severity,
            "title": note.title,
            "message": note.message,
            "data": note.data or {},
            "user_id": note.user_id,
            "is_read": view.is_read,
            "read_at": view.read_at,
            "created_at": note.created_at,
        }


class NotificationListSchema(ListEnvelopeSchema):
    items = fields.List(fields.Nested(NotificationSchema))


class ReadAllSchema(Schema):
    message = fields.String()
    marked_read = fields.Integer()
