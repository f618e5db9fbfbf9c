"""Baton: shared process-level pieces (settings, Celery app object, console script)."""
