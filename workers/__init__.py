"""Celery workers: ``celery -A workers worker``. Importing registers Baton's tasks and the
worker heartbeat that GET /health counts."""

from baton.celery_app import app
from workers import observability, tasks, webhook_tasks  # noqa: F401  (registers tasks and signal handlers)
from workers.heartbeat import Heartbeat

app.steps["worker"].add(Heartbeat)

__all__ = ["app"]
