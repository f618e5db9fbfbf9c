"""``baton stream``: the live-stream process (SSE, WebSocket, Socket.IO) under gevent."""

from __future__ import annotations

import sys

STREAM_APP = "api.streams.app:create_stream_app()"


def stream_command(host: str, port: int, *, connections: int = 10000) -> list[str]:
    """gunicorn with ONE gevent worker (Socket.IO needs a client to stay on one process;
    run more processes behind a sticky balancer to scale), no request timeout for the
    long-lived streams beyond the worker's own heartbeat."""
    return [
        sys.executable, "-m", "gunicorn", "--bind", f"{host}:{port}", "--worker-class", "gevent",
        "--workers", "1", "--worker-connections", str(connections), "--timeout", "60",
        "--graceful-timeout", "5", "--access-logfile", "-", STREAM_APP,
    ]  # fmt: skip
