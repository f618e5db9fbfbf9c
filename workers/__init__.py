"""Celery workers: ``celery -A workers worker``. Importing registers Baton's tasks."""

from baton.celery_app import app
from workers import tasks  # noqa: F401  (registers the tasks on the app)

__all__ = ["app"]
