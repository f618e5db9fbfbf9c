"""gunicorn's configuration for the API (``gunicorn -c python:baton.gunicorn_conf``; the
root ``gunicorn.conf.py`` loads it for a bare ``gunicorn "api:create_app()"`` too).

- ``timeout`` comes from BATON_API_TIMEOUT, the same setting that bounds how long a request
  may wait on a job (``wait_seconds``), so no wait outlives its worker.
- JSON logs; the access log carries the request id the API put on the response.
- Prometheus multiprocess mode: every worker writes to one directory that /metrics reads.
"""

from __future__ import annotations

import shutil
from typing import Any

from baton.observability import gunicorn_logconfig, prepare_metrics_dir
from baton.settings import get_settings

_metrics_dir = prepare_metrics_dir("api")  # before any worker imports prometheus_client

timeout = get_settings().api_timeout
graceful_timeout = 30
logconfig_dict = gunicorn_logconfig()
accesslog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms request_id=%({x-request-id}o)s'


def child_exit(_server: Any, worker: Any) -> None:
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(_server: Any) -> None:
    shutil.rmtree(_metrics_dir, ignore_errors=True)
