"""Structured logs and the Prometheus metrics directory, shared by the API and the workers.

Log lines are JSON (python-json-logger) carrying ``request_id``, ``job_id``, ``step_id`` and
``organization_id`` whenever the code that logs runs inside a request or a task: those
values live in context variables set at the edges (the API's request hooks, Celery's task
signals), so no call site has to pass them on.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from pythonjsonlogger.json import JsonFormatter

from baton.settings import get_settings, reset_settings_cache

CONTEXT: dict[str, ContextVar[str | None]] = {
    name: ContextVar(name, default=None)
    for name in ("request_id", "organization_id", "job_id", "step_id")
}


def bind(**values: Any) -> None:
    """Set context fields (request_id, organization_id, job_id, step_id) for later lines."""
    for name, value in values.items():
        CONTEXT[name].set(None if value is None else str(value))


def clear() -> None:
    for var in CONTEXT.values():
        var.set(None)


@contextmanager
def bound(**values: Any) -> Iterator[None]:
    tokens = [
        (CONTEXT[n], CONTEXT[n].set(None if v is None else str(v))) for n, v in values.items()
    ]
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


class ContextFilter(logging.Filter):
    """Adds the context fields that are known to every record a handler emits."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name, var in CONTEXT.items():
            value = var.get()
            if value is not None and getattr(record, name, None) is None:
                setattr(record, name, value)
        return True


class AccessLogFilter(logging.Filter):
    """gunicorn's access records carry their atoms as the record's args: lift the request
    id (the X-Request-ID the API set on the response) and the request's facts into fields."""

    ATOMS = {
        "request_id": "{x-request-id}o",
        "method": "m",
        "path": "U",
        "status": "s",
        "duration_ms": "M",
        "remote_addr": "h",
    }

    def filter(self, record: logging.LogRecord) -> bool:
        atoms = record.args
        if isinstance(atoms, Mapping):
            for field, atom in self.ATOMS.items():
                value = atoms.get(atom)
                if value not in (None, "-"):
                    setattr(record, field, value)
        return True


def make_formatter() -> logging.Formatter:
    if get_settings().log_format == "text":
        return logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s")
    return JsonFormatter(
        "{levelname}{name}{message}",
        style="{",
        rename_fields={"levelname": "level", "name": "logger"},
        timestamp="time",  # UTC, ISO 8601
    )


def decorate(handler: logging.Handler) -> None:
    """Give a handler someone else created (Celery's, gunicorn's) Baton's format and fields."""
    handler.setFormatter(make_formatter())
    if not any(isinstance(f, ContextFilter) for f in handler.filters):
        handler.addFilter(ContextFilter())


def configure_logging() -> None:
    """One stderr handler on the root logger, unless something configured logging already
    (gunicorn's logconfig_dict, Celery, pytest)."""
    root = logging.getLogger()
    if root.handlers:
        return
    handler = logging.StreamHandler()
    decorate(handler)
    root.addHandler(handler)
    root.setLevel(get_settings().log_level)


def gunicorn_logconfig() -> dict[str, Any]:
    """gunicorn's ``logconfig_dict``: its error and access logs and the app's, as JSON."""
    level = get_settings().log_level
    handler = {
        "class": "logging.StreamHandler",
        "formatter": "baton",
        "filters": ["context"],
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"baton": {"()": "baton.observability.make_formatter"}},
        "filters": {
            "context": {"()": "baton.observability.ContextFilter"},
            "access": {"()": "baton.observability.AccessLogFilter"},
        },
        "handlers": {
            "console": handler,
            "access": {**handler, "filters": ["context", "access"], "stream": "ext://sys.stdout"},
        },
        "root": {"level": level, "handlers": ["console"]},
        "loggers": {
            "gunicorn.error": {"level": "INFO", "handlers": ["console"], "propagate": False},
            "gunicorn.access": {"level": "INFO", "handlers": ["access"], "propagate": False},
        },
    }


# -- Prometheus multiprocess directory ------------------------------------------------------


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def prepare_metrics_dir(role: str) -> Path:
    """A fresh multiprocess directory for this process and its children (gunicorn workers,
    Celery's pool), under BATON_HOME/metrics/<role>-<pid>; left-overs of dead processes are
    removed. Must run before anything imports prometheus_client (it picks its mode then)."""
    base = get_settings().home / "metrics"
    base.mkdir(parents=True, exist_ok=True)
    for old in base.glob("*-*"):
        pid = old.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _pid_alive(int(pid)):
            shutil.rmtree(old, ignore_errors=True)
    path = base / f"{role}-{os.getpid()}"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir()
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(path)
    reset_settings_cache()
    return path


def prepare_worker_metrics() -> None:
    """``baton worker`` with BATON_WORKER_METRICS_PORT: the pool's children write their
    metrics to one directory that the worker's main process serves."""
    if get_settings().worker_metrics_port:
        prepare_metrics_dir("worker")
