"""kombu's Redis transport for the API's sends, with one Redis client per channel.

kombu's Redis channel builds a new ``redis.Redis`` object (about 170 response callbacks
copied into a case-insensitive dict) for every publish: twice a submission (the task's
``LPUSH`` and its ``task-sent`` event's ``PUBLISH``). A client over the channel's
connection pool holds no connection of its own (each command takes one from the pool),
so one client per channel answers exactly as a fresh one would; it is rebuilt if the
channel's pool is. Only the API uses it (``canvas.bound_broker_waits``); workers keep
kombu's transport.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _shared_client = None

    @contextmanager
    def conn_or_acquire(self, client=None) -> Iterator:  # type: ignore[no-untyped-def]
        if client:
            yield client
            return
        shared = self._shared_client
        if shared is None or shared.connection_pool is not self.pool:
            shared = self._shared_client = self._create_client()
        yield shared


class Transport(kombu_redis.Transport):
    Channel = Channel


# For ``broker_transport`` (kombu resolves "module:Class").
TRANSPORT = f"{__name__}:Transport"
