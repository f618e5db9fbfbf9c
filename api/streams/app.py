"""The stream process: the whole API plus WebSocket and Socket.IO, on gevent.

``baton stream`` serves ``create_stream_app()`` with ``gunicorn -k gevent -w 1``: every
open stream is a greenlet, not an OS thread. gunicorn's gevent worker monkey-patches the
standard library before loading the app; here psycopg2 is made cooperative too
(psycogreen), so a query waits without blocking the other streams. One worker per
process, because Socket.IO's polling transport needs a client to stay on one process.
"""

from __future__ import annotations

from typing import Any

from flask import Flask

from api import create_app


def _gevent_active() -> bool:
    try:
        from gevent import monkey
    except ImportError:
        return False
    return bool(monkey.is_module_patched("socket"))


def create_stream_app(test_config: dict[str, Any] | None = None) -> Flask:
    on_gevent = _gevent_active()
    if on_gevent:
        from psycogreen.gevent import patch_psycopg

        patch_psycopg()
    # Open streams outlive a Redis outage (they read the rows); new requests must too:
    # rate limits count in memory until Redis is back.
    config = {"RATELIMIT_IN_MEMORY_FALLBACK_ENABLED": True, **(test_config or {})}
    app = create_app(config)
    from api.streams.sockets import init_sockets

    init_sockets(app, async_mode="gevent" if on_gevent else "threading")
    return app
