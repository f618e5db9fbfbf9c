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
