"""gunicorn settings for Baton's API (``gunicorn -c python:baton.gunicorn_conf``).

The API answers a too-long URL itself, in its error envelope (414 past
``BATON_MAX_URL_CHARS``, 4096 by default), so gunicorn's own request-line limit is set to
its maximum, above the app's. What gunicorn still refuses before the app sees it (a
request line past 8190 bytes, too many or too large headers, a malformed request) is
answered in the same JSON envelope instead of gunicorn's HTML page.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

from gunicorn import util

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
