"""Webhook delivery tasks, on their own queue (``<prefix>.webhooks``): a slow or dead
receiver holds up only other deliveries, never job steps."""

from __future__ import annotations

import uuid
from datetime import timedelta

from baton.celery_app import app
from baton.settings import get_settings
from models.db import session_factory
from orchestration import webhooks
from orchestration.task_names import TaskName


# Idempotent: the outbox row is claimed by compare-and-set; a delivered row is never sent
# again, so a redelivered message (acks_late) is a no-op.
# No one reads its result: the outbox row is the record (one Redis write less a delivery).
@app.task(
    name=TaskName.DELIVER_WEBHOOK, acks_late=True, ignore_result=True, soft_time_limit=90,
    time_limit=120,
)  # fmt: skip
def deliver_webhook(delivery_id: str) -> str:
    result = webhooks.deliver(session_factory(), delivery_id=uuid.UUID(delivery_id))
    if result.outcome is webhooks.Outcome.RETRY and (
        result.countdown <= webhooks.MAX_COUNTDOWN_SECONDS
    ):
        # Same row, same webhook-id. Longer waits stay in the outbox for beat.
        webhooks.send_deliveries([uuid.UUID(delivery_id)], countdown=result.countdown)
    return result.outcome.value


@app.task(name=TaskName.RESEND_WEBHOOKS, soft_time_limit=120, time_limit=180)
def resend_lost_webhooks() -> int:
    lost_after = timedelta(seconds=get_settings().webhook_resend_after_seconds)
    return webhooks.resend_lost(session_factory(), lost_after=lost_after)
