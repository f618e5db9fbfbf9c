"""/notifications: the caller's notifications and their own read state."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.schemas import page_request
from api.notifications.schemas import (
    NotificationListArgsSchema,
    NotificationListSchema,
    NotificationSchema,
    ReadAllSchema,
)
from api.security import current_principal, requires, sessions
from orchestration import notifications

blp = Blueprint(
    "notifications", __name__, url_prefix="/api/v1/notifications", description="Notifications"
)


@blp.route("")
class Notifications(MethodView):
    @requires()
    @blp.arguments(NotificationListArgsSchema, location="query")
    @blp.response(200, NotificationListSchema)
    def get(self, args: dict[str, Any]):
        """Newest first: the organization's notifications and the caller's own (filters:
        is_read, severity)."""
        filters = notifications.NotificationFilters(
            is_read=args.get("is_read"), severity=args.get("severity")
        )
        # The list schema dumps the Page (items, total, limit, offset) itself.
        return notifications.list_notifications(
            sessions(), principal=current_principal(), filters=filters, page=page_request(args)
        )


@blp.route("/<uuid:notification_id>/read")
class NotificationRead(MethodView):
    @requires()
    @blp.response(200, NotificationSchema)
    def post(self, notification_id: uuid.UUID):
        """Mark one notification read for the caller (again is fine)."""
        return notifications.mark_read(
            sessions(), principal=current_principal(), notification_id=notification_id
        )


@blp.route("/read-all")
class NotificationsReadAll(MethodView):
    @requires()
    @blp.response(200, ReadAllSchema)
    def post(self):
        """Mark every notification the caller has not read yet; answers how many."""
        count = notifications.mark_all_read(sessions(), principal=current_principal())
        return {"message": f"Marked {count} notifications read", "marked_read": count}
