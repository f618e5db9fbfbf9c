"""Engines and sessions. Nothing connects until a session is first used."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session, sessionmaker

from baton.settings import get_settings
from models import prepared


def make_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"timeout": 30})

        @sa.event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # type: ignore[no-untyped-def]
            # WAL lets the API read while a worker writes; foreign keys are off by default.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    # A database that does not answer fails a connection in bounded time (a 503 at the API).
    connect_args = {"connect_timeout": get_settings().db_connect_timeout}
    engine = sa.create_engine(url, pool_size=10, max_overflow=20, connect_args=connect_args)
    _ping_when_idle(engine)
    prepared.install(engine)
    return engine


# A pooled connection idle for longer than this is pinged (``SELECT 1``) before use; one
# checked in more recently is handed out as it is. A step takes two transactions a few
# milliseconds apart: pinging before each (``pool_pre_ping``) was a round trip per
# transaction. A connection that dies in that window fails its statement as one that
# dies just after a ping always could: the engine's ``through_outage`` runs the
# transaction again, the API answers 503, and SQLAlchemy drops the pool's connections on
# the disconnect, so the next checkout connects afresh.
PING_IDLE_SECONDS = 1.0
_CHECKED_IN = "baton.checked_in"


def _ping_when_idle(engine: sa.Engine) -> None:
    @sa.event.listens_for(engine, "checkin")
    def _stamp(_dbapi_conn, record) -> None:  # type: ignore[no-untyped-def]
        record.info[_CHECKED_IN] = time.monotonic()

    @sa.event.listens_for(engine, "checkout")
    def _ping(dbapi_conn, record, _proxy) -> None:  # type: ignore[no-untyped-def]
        checked_in = record.info.get(_CHECKED_IN)
        if checked_in is not None and time.monotonic() - checked_in < PING_IDLE_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_conn)
        except Exception as exc:
            # The pool's documented pessimistic check: it discards this connection and
            # checks out a fresh one (what pool_pre_ping did).
            raise sa.exc.DisconnectionError() from exc


@lru_cache(maxsize=4)
def get_engine(url: str | None = None) -> sa.Engine:
    return make_engine(url or get_settings().database_url)


def session_factory(url: str | None = None) -> sessionmaker[Session]:
    return sessionmaker(bind=get_engine(url), expire_on_commit=False)


@contextmanager
def transaction(factory: sessionmaker[Session] | None = None) -> Iterator[Session]:
    """One unit of work: commits on success, rolls back on error. Owned by a command/task."""
    factory = factory or session_factory()
    with factory() as session, session.begin():
        yield session


def autocommit_engine(factory: sessionmaker[Session]) -> sa.Engine | None:
    """The PostgreSQL engine a session factory is bound to, when one statement may run on
    a pooled driver connection of its own (``execute_autocommit``); None for SQLite (the
    embedded mode) or a factory bound to a connection (a test's outer transaction)."""
    bind = factory.kw.get("bind")
    if isinstance(bind, sa.Engine) and bind.dialect.name == "postgresql":
        return bind
    return None


def execute_autocommit(engine: sa.Engine, sql: str, params: dict[str, Any]) -> Any:
    """Run ONE statement (the driver's SQL text and parameters) on a pooled driver
    connection in autocommit, without a SQLAlchemy ``Connection`` or ``Session``: no BEGIN
    and no COMMIT round trip (the statement is its own transaction), and none of their
    Python (the connection's setup, the statement cache lookup, the execution context and
    result, the session's transaction); and as a server-side prepared statement
    (``models.prepared.execute_driver_prepared``). Returns the first row, or None.

    A public door (``Engine.raw_connection``): the pool's checkout (and its ping after an
    idle second) applies; a driver error is raised as SQLAlchemy's (``IntegrityError``,
    ``OperationalError``, ...: a 503 at the API for a dead database) and the connection is
    invalidated, so none goes back to the pool in autocommit or in an unknown state.
    """
    dialect = engine.dialect
    dbapi_error = dialect.loaded_dbapi.Error
    try:
        pooled = engine.raw_connection()
    except dbapi_error as exc:
        raise sa.exc.DBAPIError.instance(sql, params, exc, dbapi_error, dialect=dialect) from exc
    try:
        driver = pooled.driver_connection
        driver.autocommit = True
        try:
            with driver.cursor() as cursor:
                # Prepared on the server session's first use: parsing and planning anew
                # were two thirds of the token check's server CPU, a fifth of a
                # submission's INSERT's (docs/submission-profile.md, session 16).
                prepared.execute_driver_prepared(cursor, pooled.info, sql, params)
                row = cursor.fetchone() if cursor.description is not None else None
        finally:
            driver.autocommit = False  # the pool hands it to transactions next
    except dbapi_error as exc:
        # Dead, or left in an unknown state: never back into the pool (the pool
        # connects afresh; SQLAlchemy's own disconnect handling does the rest).
        pooled.invalidate(exc)
        raise sa.exc.DBAPIError.instance(
            sql, params, exc, dbapi_error, connection_invalidated=True, dialect=dialect
        ) from exc
    except BaseException:
        pooled.invalidate()
        raise
    finally:
        pooled.close()
    return row
