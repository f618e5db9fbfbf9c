"""Celery settings, from baton.settings (the one module that reads the environment).

Loaded by ``app.config_from_object("celeryconfig")``; every value here follows the
"Celery, used safely" section of DESIGN.md.
"""

from baton.settings import get_settings
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
worker_send_task_events = True
task_send_sent_event = True

beat_schedule = {
    "reap-stale-jobs": {"task": str(TaskName.REAP_STALE_JOBS), "schedule": 60.0},
    "sweep-budget-reservations": {"task": str(TaskName.SWEEP_RESERVATIONS), "schedule": 60.0},
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
