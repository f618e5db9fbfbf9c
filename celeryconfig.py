"""Celery settings, from baton.settings (the one module that reads the environment).

Loaded by ``app.config_from_object("celeryconfig")``; every value here follows the
"Celery, used safely" section of DESIGN.md.
"""

from baton.settings import get_settings
from orchestration.canvas import maintenance_queue
from orchestration.task_names import TaskName

_s = get_settings()

broker_url = _s.celery_broker_url
result_backend = _s.celery_result_backend

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# A killed worker's step runs again; safe because steps are idempotent.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = False
task_time_limit = _s.step_time_limit
task_soft_time_limit = _s.step_soft_time_limit
result_expires = 24 * 3600
result_extended = False
task_allow_error_cb_on_chord_header = True
worker_max_tasks_per_child = 1000
worker_max_memory_per_child = 512 * 1024  # KiB
broker_connection_retry_on_startup = True
broker_connection_timeout = _s.broker_timeout_seconds
worker_hijack_root_logger = False
# Task events go out while someone watches: Flower (``baton flower``) switches them on in
# every worker every 5 s (its ``enable_events`` option, on by default), as does
# ``celery -A workers control enable_events``. Unwatched, a worker's main process would
# spend about a third of its CPU publishing three events a task, one of them
# (task-received) before the task reaches its pool process. Worker heartbeats stay on.
worker_send_task_events = False
# No ``task-sent`` events (a PUBLISH per send: each submission and every chain hop): Flower
# sees every task from the worker's own events, and a queued job is its row in PostgreSQL
# (docs/decisions.md, issue 14).
task_send_sent_event = False

# Beat's tasks go to the maintenance queue, which every Baton worker consumes (never
# Celery's default ``celery`` queue, which none does). They expire after one period: a
# backlog of reaper runs is worth one run.
_maintenance = {"queue": maintenance_queue(), "expires": _s.reaper_interval_seconds}
task_routes = {
    str(TaskName.REAP_STALE_JOBS): {"queue": maintenance_queue()},
    str(TaskName.SWEEP_RESERVATIONS): {"queue": maintenance_queue()},
    str(TaskName.PURGE_EXPIRED): {"queue": maintenance_queue()},
    str(TaskName.RESEND_WEBHOOKS): {"queue": maintenance_queue()},
}
beat_schedule = {
    "reap-stale-jobs": {
        "task": str(TaskName.REAP_STALE_JOBS),
        "schedule": _s.reaper_interval_seconds,
        "options": _maintenance,
    },
    "sweep-budget-reservations": {
        "task": str(TaskName.SWEEP_RESERVATIONS),
        "schedule": _s.reaper_interval_seconds,
        "options": _maintenance,
    },
    # Idempotency keys and logged-out tokens past their expiry; one run a period is enough.
    "purge-expired": {
        "task": str(TaskName.PURGE_EXPIRED),
        "schedule": 3600.0,
        "options": {"queue": maintenance_queue(), "expires": 3600.0},
    },
    "resend-lost-webhooks": {
        "task": str(TaskName.RESEND_WEBHOOKS),
        "schedule": 60.0,
        "options": {"queue": maintenance_queue(), "expires": 60.0},
    },
}

if _s.broker_is_filesystem:
    # The folders are created by baton.celery_app when the app is configured.
    _broker_dir = _s.home / "broker"
    broker_transport_options = {
        "data_folder_in": str(_broker_dir / "queue"),
        "data_folder_out": str(_broker_dir / "queue"),
        "processed_folder": str(_broker_dir / "processed"),
        "control_folder": str(_broker_dir / "control"),
        "store_processed": False,
        # The filesystem transport polls its folder; the default 1 s would dominate a step.
        "polling_interval": 0.1,
    }
else:
    # The API bounds its own sends (orchestration.canvas.bound_broker_waits); workers keep
    # the transport's defaults.
    broker_transport_options = {"visibility_timeout": _s.visibility_timeout}
    result_backend_transport_options = {"visibility_timeout": _s.visibility_timeout}
