"""A benchmark's own PostgreSQL database: created empty at the start, dropped at the end
(its connections ended first). Not part of Baton."""

from __future__ import annotations

import sqlalchemy as sa


def _admin(server: str) -> sa.Engine:
    return sa.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")


def create_database(server: str, name: str) -> None:
    """``CREATE DATABASE name`` on ``server`` (a URL without a database)."""
    with _admin(server).connect() as conn:
        conn.execute(sa.text(f'CREATE DATABASE "{name}"'))


def drop_database(server: str, name: str) -> None:
    """End every connection to ``name``, then drop it."""
    with _admin(server).connect() as conn:
        conn.execute(
            sa.text(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE datname = :d AND pid <> pg_backend_pid()"
            ),
            {"d": name},
        )
        conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}"'))


def drop_run_keys() -> None:
    """Delete what a run left in Redis under its own names (``BATON_QUEUE_PREFIX``,
    ``BATON_REDIS_PREFIX``, set by the bench before it starts anything): its queues and
    kombu's bindings of them on the broker, its rate-limit, quota and metric keys in
    ``REDIS_URL``'s database. What expires on its own is left: results in the result
    backend, and the API's request metrics, which an in-process app's flush thread may
    write once more after this."""
    import os

    import redis

    broker, store = os.environ.get("CELERY_BROKER_URL", ""), os.environ.get("REDIS_URL", "")
    where: list[tuple[str, str]] = []
    if queues := os.environ.get("BATON_QUEUE_PREFIX"):
        where += [(broker, f"{queues}.*"), (broker, f"_kombu.binding.{queues}.*")]
        where += [(broker, f"_kombu.binding_permanent.{queues}.*")]
    if keys := os.environ.get("BATON_REDIS_PREFIX"):
        where.append((store, f"{keys}:*"))
    for url, match in where:
        if not url.startswith(("redis://", "rediss://")):
            continue
        with redis.Redis.from_url(url) as client:
            names = list(client.scan_iter(match=match, count=1000))
            if names:
                client.delete(*names)
