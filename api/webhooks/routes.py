"""/webhooks: outgoing webhook subscriptions (admins and managers)."""

from __future__ import annotations

import uuid
from typing import Any

from flask.views import MethodView
from flask_smorest import Blueprint

from api.common.schemas import page_request
from api.security import current_principal, requires, sessions
from api.webhooks.schemas import (
    DeliveryListSchema,
    DeliverySchema,
    RotateSecretSchema,
    WebhookCreateSchema,
    WebhookListArgsSchema,
    WebhookListSchema,
    WebhookSchema,
    WebhookUpdateSchema,
    present_delivery,
    present_webhook,
)
from orchestration import webhooks

blp = Blueprint(
    "webhooks",
    __name__,
    url_prefix="/api/v1/webhooks",
    description="Outgoing webhooks, signed per Standard Webhooks (admins and managers)",
)


@blp.route("")
class Webhooks(MethodView):
    @requires("webhook:admin")
    @blp.arguments(WebhookListArgsSchema, location="query")
    @blp.response(200, WebhookListSchema)
    def get(self, args: dict[str, Any]):
        """The organization's subscriptions (sort: created_at, name)."""
        page = webhooks.list_subscriptions(
            sessions(), principal=current_principal(), page=page_request(args)
        )
        page.items = [present_webhook(view) for view in page.items]
        return page

    @requires("webhook:admin")
    @blp.arguments(WebhookCreateSchema)
    @blp.response(201, WebhookSchema)
    def post(self, data: dict[str, Any]):
        """Subscribe a URL to event types. Without ``secret`` a ``whsec_`` secret is made;
        the answer is the only time it is shown. The URL must not resolve to an internal
        address (422)."""
        view = webhooks.create_subscription(sessions(), principal=current_principal(), data=data)
        return present_webhook(view)


@blp.route("/<uuid:webhook_id>")
class WebhookById(MethodView):
    @requires("webhook:admin")
    @blp.response(200, WebhookSchema)
    def get(self, webhook_id: uuid.UUID):
        """One subscription."""
        view = webhooks.get_subscription(
            sessions(), principal=current_principal(), webhook_id=webhook_id
        )
        return present_webhook(view)

    @requires("webhook:admin")
    @blp.arguments(WebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    def put(self, changes: dict[str, Any], webhook_id: uuid.UUID):
        """Change the fields given; ``is_active: true`` re-enables a disabled one."""
        view = webhooks.update_subscription(
            sessions(), principal=current_principal(), webhook_id=webhook_id, changes=changes
        )
        return present_webhook(view)

    @requires("webhook:admin")
    @blp.arguments(WebhookUpdateSchema)
    @blp.response(200, WebhookSchema)
    def patch(self, changes: dict[str, Any], webhook_id: uuid.UUID):
        """Same as PUT: partial."""
        view = webhooks.update_subscription(
            sessions(), principal=current_principal(), webhook_id=webhook_id, changes=changes
        )
        return present_webhook(view)

    @requires("webhook:admin")
    @blp.response(204)
    def delete(self, webhook_id: uuid.UUID):
        """Remove it and its delivery log."""
        webhooks.delete_subscription(
            sessions(), principal=current_principal(), webhook_id=webhook_id
        )


@blp.route("/<uuid:webhook_id>/deliveries")
class WebhookDeliveries(MethodView):
    @requires("webhook:admin")
    @blp.arguments(WebhookListArgsSchema, location="query")
    @blp.response(200, DeliveryListSchema)
    def get(self, args: dict[str, Any], webhook_id: uuid.UUID):
        """The delivery log, newest first: every attempt's status code, latency and error."""
        page = webhooks.list_deliveries(
            sessions(), principal=current_principal(), webhook_id=webhook_id,
            page=page_request(args),
        )  # fmt: skip
        page.items = [present_delivery(v.delivery, v.attempts) for v in page.items]
        return page


@blp.route("/<uuid:webhook_id>/test")
class WebhookTest(MethodView):
    @requires("webhook:admin")
    @blp.response(202, DeliverySchema)
    def post(self, webhook_id: uuid.UUID):
        """Send a ``webhook.test`` event to this subscription (follow it in the log)."""
        delivery = webhooks.ping(sessions(), principal=current_principal(), webhook_id=webhook_id)
        return present_delivery(delivery, [])


@blp.route("/<uuid:webhook_id>/rotate-secret")
class WebhookRotate(MethodView):
    @requires("webhook:admin")
    @blp.arguments(RotateSecretSchema)
    @blp.response(200, WebhookSchema)
    def post(self, data: dict[str, Any], webhook_id: uuid.UUID):
        """A new secret signs from now on; the old one also signs (a second signature in
        ``webhook-signature``) until ``previous_secret_expires_at`` (``grace_hours``,
        default BATON_WEBHOOK_SECRET_GRACE_HOURS)."""
        view = webhooks.rotate_secret(
            sessions(), principal=current_principal(), webhook_id=webhook_id,
            secret=data.get("secret"), grace_hours=data.get("grace_hours"),
        )  # fmt: skip
        return present_webhook(view)
