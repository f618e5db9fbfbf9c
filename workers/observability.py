"""Worker logs and metrics through Celery's signals: every log line a task writes names its
job and step (JSON, python-json-logger), tasks are counted by name and state, and the
worker's main process serves /metrics for its whole pool (BATON_WORKER_METRICS_PORT,
multiprocess mode prepared by ``baton worker``)."""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery import signals
from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client import multiprocess as prometheus_multiprocess

from baton import observability
from baton.settings import get_settings
from orchestration.canvas import ORGANIZATION_HEADER
from orchestration.task_names import TaskName

log = logging.getLogger(__name__)

TASKS = Counter("baton_celery_tasks_total", "Celery tasks run", ["task", "state"])
TASK_SECONDS = Histogram(
    "baton_celery_task_duration_seconds",
    "Time a Celery task ran",
    ["task"],
    buckets=(0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 600),
)
_started: dict[str, float] = {}


@signals.after_setup_logger.connect
@signals.after_setup_task_logger.connect
def _json_logs(logger: logging.Logger, **_: Any) -> None:
    for handler in logger.handlers:
        observability.decorate(handler)


@signals.task_prerun.connect
def _bind_task(task_id: str, task: Any, args: tuple = (), **_: Any) -> None:
    _started[task_id] = time.perf_counter()
    job_id = args[0] if args and task.name != TaskName.REAP_STALE_JOBS else None
    step_id = args[1] if task.name == TaskName.RUN_STEP and len(args) > 1 else None
    organization_id = getattr(task.request, ORGANIZATION_HEADER, None)
    observability.clear()
    observability.bind(job_id=job_id, step_id=step_id, organization_id=organization_id)


@signals.task_postrun.connect
def _count_task(task_id: str, task: Any, state: str | None = None, **_: Any) -> None:
    TASKS.labels(task.name, state or "UNKNOWN").inc()
    began = _started.pop(task_id, None)
    if began is not None:
        TASK_SECONDS.labels(task.name).observe(time.perf_counter() - began)
    observability.clear()


@signals.worker_ready.connect
def _serve_metrics(**_: Any) -> None:
    settings = get_settings()
    if not settings.worker_metrics_port:
        return
    if settings.metrics_dir:
        registry = CollectorRegistry()
        prometheus_multiprocess.MultiProcessCollector(registry)
    else:  # a bare `celery worker`: this process's own metrics only
        registry = REGISTRY
    start_http_server(
        settings.worker_metrics_port, addr=settings.worker_metrics_host, registry=registry
    )
    log.info(
        "metrics at http://%s:%d/metrics",
        settings.worker_metrics_host,
        settings.worker_metrics_port,
    )


@signals.worker_process_shutdown.connect
def _forget_child(**_: Any) -> None:
    if get_settings().metrics_dir:
        prometheus_multiprocess.mark_process_dead(os.getpid())
