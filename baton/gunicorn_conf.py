"""gunicorn's configuration for the API (``gunicorn -c python:baton.gunicorn_conf``; the
root ``gunicorn.conf.py`` loads it for a bare ``gunicorn "api:create_app()"`` too).

- ``timeout`` comes from BATON_API_TIMEOUT, the same setting that bounds how long a request
  may wait on a job (``wait_seconds``), so no wait outlives its worker.
- JSON logs; the access log carries the request id the API put on the response.
- Prometheus multiprocess mode: every worker writes to one directory that /metrics reads.
- The API answers a too-long URL itself, in its error envelope (414 past
  ``BATON_MAX_URL_CHARS``, 4096 by default), so gunicorn's own request-line limit is set
  to its maximum, above the app's. What gunicorn still refuses before the app sees it (a
  request line past 8190 bytes, too many or too large headers, a malformed request) is
  answered in the same JSON envelope instead of gunicorn's HTML page.
"""

from __future__ import annotations

import json
import shutil
import uuid
from datetime import UTC, datetime
from typing import Any

from gunicorn import util

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


# gunicorn's ceiling for the request line (0 would mean unlimited: no bound at all).
limit_request_line = 8190
limit_request_fields = 100
limit_request_field_size = 8190

_CODES = {400: "VALIDATION_ERROR", 414: "URI_TOO_LONG", 431: "REQUEST_HEADERS_TOO_LARGE"}


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """gunicorn.util.write_error, answering in Baton's ``{"error": {...}}`` envelope."""
    body = json.dumps(
        {
            "error": {
                "code": _CODES.get(status_int, "INTERNAL_SERVER_ERROR"),
                "message": f"{reason}: {mesg}" if mesg else reason,
                "details": [],
                "request_id": str(uuid.uuid4()),
                "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            }
        }
    ).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode("latin1")
    util.write_nonblock(sock, head + body)


# Workers call util.write_error by module attribute: this is gunicorn's one hook for it.
util.write_error = write_json_error
